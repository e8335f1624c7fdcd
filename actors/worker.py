"""The rollout worker: steps a vector environment with the CPU policy and emits fragments."""

from __future__ import annotations

import numpy as np

from actors.context.base import ContextProvider
from actors.envs import VectorEnv
from actors.guards import add_counts, sanitize_contexts, valid_transitions
from actors.policy import PolicyCopy
from learner.types import (
    CONTEXT_FALLBACK_REASONS,
    REJECTED_TRANSITION_REASONS,
    EpisodeSummary,
    Fragment,
    VersionedWeights,
)


class EpisodeTracker:
    """Running return, length and speed error per environment; summaries of finished episodes."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.speed_errors = np.zeros(num_envs)

    def step(self, reward: np.ndarray, speed_error: np.ndarray | None, done: np.ndarray) -> list[EpisodeSummary]:
        self.returns += np.where(np.isfinite(reward), reward, 0.0)
        self.lengths += 1
        if speed_error is not None:
            self.speed_errors += speed_error
        finished = []
        for i in np.flatnonzero(done):
            error = self.speed_errors[i] / self.lengths[i] if speed_error is not None else float("nan")
            finished.append(EpisodeSummary(float(self.returns[i]), int(self.lengths[i]), float(error)))
        self.returns[done] = 0.0
        self.lengths[done] = 0
        self.speed_errors[done] = 0.0
        return finished


class RolloutWorker:
    """Owns ``num_envs`` environments, their context provider and a CPU policy copy."""

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
        self.obs = env.reset(seed)
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

    def _to_env_units(self, action: np.ndarray) -> np.ndarray:
        low, high = self.env.action_low, self.env.action_high
        return low + (action + 1.0) * 0.5 * (high - low)

    def rollout(self, steps: int, random_actions: bool = False) -> Fragment:
        """Step all environments ``steps`` times; returns ``[steps, num_envs, ...]`` arrays."""
        record: dict[str, list[np.ndarray]] = {k: [] for k in Fragment.__dataclass_fields__ if k in ARRAY_FIELDS}
        fallbacks = dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)
        rejected = dict.fromkeys(REJECTED_TRANSITION_REASONS, 0)
        episodes: list[EpisodeSummary] = []
        for _ in range(steps):
            action = self._actions(random_actions)
            result = self.env.step(self._to_env_units(action))
            self.provider.observe(result.dynamics_samples)
            next_context, counts = sanitize_contexts(self.provider.context())
            add_counts(fallbacks, counts)
            done = result.terminated | result.truncated
            valid, dropped = valid_transitions(self.obs, result.final_obs, result.reward)
            add_counts(rejected, dropped)
            step = {
                "obs": self.obs, "context": self.context, "action": action, "reward": result.reward,
                "next_obs": result.final_obs, "next_context": next_context,
                "terminated": result.terminated, "truncated": result.truncated, "valid": valid,
            }  # fmt: skip
            for name, value in step.items():
                record[name].append(value)
            episodes += self.episodes.step(result.reward, result.speed_error, done)
            self.obs, self.context = result.obs, next_context
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
        """New vehicles start with a fresh context; only the reset rows change."""
        self.provider.reset(env_ids)
        fresh, counts = sanitize_contexts(self.provider.context(), env_ids)
        add_counts(fallbacks, counts)
        merged = self.context.copy()
        merged[env_ids] = fresh[env_ids]
        return merged


ARRAY_FIELDS = frozenset(
    {"obs", "context", "action", "reward", "next_obs", "next_context", "terminated", "truncated", "valid"}
)
