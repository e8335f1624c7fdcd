"""The rollout worker: steps a vector environment with the CPU policy and emits fragments."""

from __future__ import annotations

import logging

import numpy as np

from actors.context.base import ContextProvider
from actors.envs import VectorEnv, to_env_units
from actors.guards import add_counts, nonfinite_rows, sanitize_actions, sanitize_contexts, valid_transitions
from actors.policy import PolicyCopy
from learner.types import (
    CONTEXT_FALLBACK_REASONS,
    REJECTED_TRANSITION_REASONS,
    EpisodeSummary,
    Fragment,
    VersionedWeights,
)

log = logging.getLogger(__name__)

MAX_RESET_ATTEMPTS = 10
"""Resets of one environment in a row that may all give a non-finite observation before the worker gives up."""


class NonFiniteResetError(RuntimeError):
    """An environment keeps returning non-finite observations from ``reset``: it cannot be used."""


class EpisodeTracker:
    """Running return, length and speed error per environment; summaries of finished episodes."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.speed_errors = np.zeros(num_envs)

    def step(
        self, reward: np.ndarray, speed_error: np.ndarray | None, done: np.ndarray, cut_short: np.ndarray
    ) -> list[EpisodeSummary]:
        self.returns += np.where(np.isfinite(reward), reward, 0.0)
        self.lengths += 1
        if speed_error is not None:
            self.speed_errors += np.where(np.isfinite(speed_error), speed_error, 0.0)
        finished = []
        for i in np.flatnonzero(done):
            error = self.speed_errors[i] / self.lengths[i] if speed_error is not None else float("nan")
            summary = EpisodeSummary(float(self.returns[i]), int(self.lengths[i]), float(error), bool(cut_short[i]))
            finished.append(summary)
        self.returns[done] = 0.0
        self.lengths[done] = 0
        self.speed_errors[done] = 0.0
        return finished


class RolloutWorker:
    """Owns ``num_envs`` environments, their context provider and a CPU policy copy.

    Every observation is checked before the policy sees it: an environment whose
    observation turns non-finite has the transition into it dropped (counted as
    ``obs_nonfinite``), its episode recorded as cut short (truncated, not
    terminal), and is reset; the policy acts on the reset observation.
    """

    def __init__(
        self,
        env: VectorEnv,
        context: ContextProvider,
        policy: PolicyCopy,
        actor_id: int = 0,
        incarnation: int = 0,
        seed: int = 0,
    ) -> None:
        self.env = env
        self.provider = context
        self.policy = policy
        self.actor_id = actor_id
        self.incarnation = incarnation
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.episodes = EpisodeTracker(env.num_envs)
        self.obs = self._restart_nonfinite(env.reset(seed))
        self.provider.reset(np.arange(env.num_envs))
        self.context, _ = sanitize_contexts(self.provider.context())

    @property
    def weights_version(self) -> int:
        return self.policy.version

    def set_weights(self, weights: VersionedWeights) -> None:
        self.policy.load(weights)

    def _actions(self, random_actions: bool) -> np.ndarray:
        if random_actions:
            return self.rng.uniform(-1.0, 1.0, (self.env.num_envs, self.env.action_dim)).astype(np.float32)
        return self.policy.act(self.obs, self.context)


    def _restart_nonfinite(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` with every non-finite row replaced by a fresh episode's observation of that environment."""
        for _ in range(MAX_RESET_ATTEMPTS):
            bad = np.flatnonzero(nonfinite_rows(obs))
            if bad.size == 0:
                return obs
            log.debug("actor %d: non-finite observation in envs %s; resetting them", self.actor_id, bad.tolist())
            obs = obs.copy()
            obs[bad] = self.env.reset_envs(bad)
        bad = np.flatnonzero(nonfinite_rows(obs)).tolist()
        raise NonFiniteResetError(
            f"environments {bad} of actor {self.actor_id} returned a non-finite observation "
            f"from {MAX_RESET_ATTEMPTS} resets in a row"
        )

    def rollout(self, steps: int, random_actions: bool = False) -> Fragment:
        """Step all environments ``steps`` times; returns ``[steps, num_envs, ...]`` arrays."""
        record: dict[str, list[np.ndarray]] = {k: [] for k in Fragment.__dataclass_fields__ if k in ARRAY_FIELDS}
        fallbacks = dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)
        rejected = dict.fromkeys(REJECTED_TRANSITION_REASONS, 0)
        episodes: list[EpisodeSummary] = []
        for _ in range(steps):
            action, bad_action = sanitize_actions(self._actions(random_actions))
            result = self.env.step(to_env_units(action, self.env))
            self.provider.observe(result.dynamics_samples, result.dynamics_present)
            next_context, counts = sanitize_contexts(self.provider.context())
            add_counts(fallbacks, counts)
            valid, dropped = valid_transitions(self.obs, result.final_obs, result.reward, bad_action)
            add_counts(rejected, dropped)
            cut_short = nonfinite_rows(result.final_obs)  # the episode cannot go on from a non-finite state
            truncated = result.truncated | (cut_short & ~result.terminated)
            done = result.terminated | truncated
            step = {
                "obs": self.obs, "context": self.context, "action": action, "reward": result.reward,
                "next_obs": result.final_obs, "next_context": next_context,
                "terminated": result.terminated, "truncated": truncated, "valid": valid,
            }  # fmt: skip
            for name, value in step.items():
                record[name].append(value)
            episodes += self.episodes.step(result.reward, result.speed_error, done, cut_short)
            self.obs, self.context = self._restart_nonfinite(result.obs), next_context
            if done.any():
                self.context = self._reset_contexts(np.flatnonzero(done), fallbacks)
        add_counts(fallbacks, self.provider.take_fallback_counts())
        self.seq += 1
        return Fragment(
            **{name: np.stack(values) for name, values in record.items()},
            actor_id=self.actor_id,
            incarnation=self.incarnation,
            seq=self.seq,
            weights_version=self.policy.version,
            episodes=tuple(episodes),
            context_fallbacks=fallbacks,
            rejected=rejected,
        )

    def _reset_contexts(self, env_ids: np.ndarray, fallbacks: dict[str, int]) -> np.ndarray:
        """New episodes start with a fresh context; only the reset rows change."""
        self.provider.reset(env_ids)
        fresh, counts = sanitize_contexts(self.provider.context(), env_ids)
        add_counts(fallbacks, counts)
        merged = self.context.copy()
        merged[env_ids] = fresh[env_ids]
        return merged


ARRAY_FIELDS = frozenset(
    {"obs", "context", "action", "reward", "next_obs", "next_context", "terminated", "truncated", "valid"}
)
