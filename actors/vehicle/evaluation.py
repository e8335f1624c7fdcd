"""Evaluating a policy on a vector environment: tracking error, return, comfort."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from actors.context.base import ContextProvider
from actors.envs import VecStep, VectorEnv, to_env_units
from actors.guards import sanitize_contexts
from actors.policy import PolicyCopy

Policy = Callable[[np.ndarray], np.ndarray]
"""``obs [n, obs_dim] -> actions [n, action_dim]`` in env units; may have ``reset(env_ids)`` for its own state."""


@dataclass(frozen=True)
class EvalReport:
    """Per-episode means over the evaluated episodes."""

    episodes: int
    mean_abs_speed_error: float
    """Mean over episodes of the episode's mean |v − v_ref| (m/s); NaN where the env reports none."""
    mean_return: float
    std_return: float
    mean_abs_jerk: float
    """Mean |Δa|/dt from the step accelerations (m/s³); NaN where the env reports no dynamics samples."""
    mean_abs_action_change: float
    """Mean |u_t − u_{t−1}| of the command the env applied (action smoothness), over all action dimensions."""
    episode_returns: tuple[float, ...] = ()
    """Each episode's return, in the order episodes finished (env index order when they end together)."""
    episode_errors: tuple[float, ...] = ()
    """Each episode's mean |v − v_ref| (m/s), same order."""
    traces: tuple[np.ndarray, ...] = ()
    """Observations ``[steps, obs_dim]`` of the first episode of environments 0, 1, ... (``trace_envs`` of them)."""

    def figures(self) -> dict[str, float]:
        """The scalar figures by name (NaN where the env reports none)."""
        names = ("episodes", "mean_abs_speed_error", "mean_return", "std_return", "mean_abs_jerk", "mean_abs_action_change")
        return {name: getattr(self, name) for name in names}

    def as_rows(self) -> list[tuple[str, str]]:
        return [
            ("episodes", str(self.episodes)),
            ("mean abs speed error (m/s)", f"{self.mean_abs_speed_error:.3f}"),
            ("mean return", f"{self.mean_return:.1f}"),
            ("std return", f"{self.std_return:.1f}"),
            ("mean abs jerk (m/s^3)", f"{self.mean_abs_jerk:.3f}"),
            ("mean abs action change", f"{self.mean_abs_action_change:.4f}"),
        ]


class _Totals:
    """Running per-environment sums of the current episode."""

    def __init__(self, n: int) -> None:
        self.ret, self.err, self.jerk, self.du, self.len = (np.zeros(n) for _ in range(5))

    def clear(self, ids: np.ndarray) -> None:
        for arr in (self.ret, self.err, self.jerk, self.du, self.len):
            arr[ids] = 0.0


def step_accel(step: VecStep, n: int) -> np.ndarray:
    """``[n]`` measured acceleration of the step (a gymnasium env's first reported sample); NaN without one."""
    samples = step.dynamics_samples
    if samples is None:
        return np.full(n, np.nan)
    if samples.ndim == 2:
        return samples[:, 2]
    present = step.dynamics_present if step.dynamics_present is not None else np.ones(samples.shape[:2], bool)
    return np.where(present[:, 0], samples[:, 0, 2], np.nan)


def evaluate_policy(
    env: VectorEnv, policy_fn: Policy, episodes: int, seed: int = 0, dt: float = 0.1, trace_envs: int = 0
) -> EvalReport:
    """Run ``policy_fn`` on ``env`` (reset with ``seed``) until ``episodes`` episodes finish; summarize them.

    Episodes are taken in the order they finish (lowest env index first within a
    step), so the report depends only on ``env``, ``policy_fn`` and ``seed``.
    ``dt`` converts step accelerations into jerk; ``trace_envs`` records the first
    episode's observations of that many environments.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = env.num_envs
    reset = getattr(policy_fn, "reset", None)
    obs = env.reset(seed)
    if reset is not None:
        reset(np.arange(n))
    totals = _Totals(n)
    prev_u = np.full((n, env.action_dim), np.nan)
    prev_a = np.zeros(n)
    first = np.ones(n, dtype=bool)
    finished: list[tuple[float, float, float, float]] = []
    traces: list[list[np.ndarray]] = [[] for _ in range(min(trace_envs, n))]
    tracing = np.arange(n) < len(traces)
    while len(finished) < episodes:
        for i in np.flatnonzero(tracing):
            traces[i].append(obs[i].copy())
        action = np.asarray(policy_fn(obs), dtype=np.float64).reshape(n, env.action_dim)
        step = env.step(action)
        totals.len += 1
        totals.ret += step.reward
        totals.err += step.speed_error if step.speed_error is not None else np.nan
        applied = action if step.applied_action is None else np.array(step.applied_action, dtype=np.float64)
        totals.du += np.nan_to_num(np.abs(applied - prev_u).mean(axis=1))
        accel = step_accel(step, n)
        totals.jerk += np.where(first, 0.0, np.abs(accel - prev_a) / dt)  # NaN throughout without samples
        prev_u, prev_a, first = applied, accel, np.zeros(n, dtype=bool)
        done = np.flatnonzero(step.terminated | step.truncated)
        for i in done:
            length = totals.len[i]
            finished.append((totals.ret[i], totals.err[i] / length, totals.jerk[i] / length, totals.du[i] / length))
        if done.size:
            tracing[done] = False
            totals.clear(done)
            prev_u[done], first[done] = np.nan, True
            if reset is not None:
                reset(done)
        obs = step.obs
    ret, err, jerk, du = (np.array(col) for col in zip(*finished[:episodes], strict=True))
    return EvalReport(
        episodes, float(err.mean()), float(ret.mean()), float(ret.std()), float(jerk.mean()), float(du.mean()),
        tuple(ret.tolist()), tuple(err.tolist()), tuple(np.stack(rows) for rows in traces),
    )  # fmt: skip


class ObservingEnv:
    """A vector env that feeds every step's dynamics samples to a context provider (as the rollout worker does)."""

    def __init__(self, env: VectorEnv, provider: ContextProvider) -> None:
        self.env, self.provider = env, provider

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def step(self, action: np.ndarray) -> VecStep:
        result = self.env.step(action)
        self.provider.observe(result.dynamics_samples, result.dynamics_present)
        return result


class ContextPolicy:
    """``evaluate_policy``'s policy: a trained actor, deterministic (its mean action), on ``[obs ‖ context]``."""

    def __init__(self, policy: PolicyCopy, provider: ContextProvider, env: VectorEnv) -> None:
        self.policy, self.provider, self.env = policy, provider, env

    def reset(self, env_ids: np.ndarray) -> None:
        self.provider.reset(np.asarray(env_ids))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        context, _ = sanitize_contexts(self.provider.context())
        return to_env_units(self.policy.act(obs, context, deterministic=True), self.env)
