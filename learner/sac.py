"""One SAC update: critics, actor, temperature, targets, and device-side health flags.

``SAC.update`` returns a small device tensor of statistics and never reads a
value back to the host, so a block of updates costs one host sync in total.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from learner.config import LearnerConfig
from learner.losses import actor_loss, critic_loss, polyak_update, soft_q_target
from learner.networks import Actor, TwinCritic
from learner.temperature import FixedTemperature, LearnedTemperature, Temperature
from learner.types import UpdateStats

if TYPE_CHECKING:
    from learner.replay import ReplayBuffer

STAT_FIELDS = (
    "policy_grad_norm",
    "q_grad_norm",
    "q_mean",
    "q_std",
    "alpha",
    "policy_loss",
    "q_loss",
    "policy_clipped",
    "q_clipped",
    "nonfinite_loss",
    "nonfinite_grad",
    "nonfinite_q",
)
"""Layout of the per-update statistics vector (every ``UpdateStats`` field but ``updates``)."""

COUNT_FIELDS = frozenset({"policy_clipped", "q_clipped", "nonfinite_loss", "nonfinite_grad", "nonfinite_q"})
NONFINITE_SLICE = slice(STAT_FIELDS.index("nonfinite_loss"), len(STAT_FIELDS))

GradHook = Callable[[int, nn.Module], None]
"""Test hook run after the critic backward of update ``n`` (e.g. to inject a NaN gradient)."""


def make_temperature(config: LearnerConfig, action_dim: int, device: torch.device) -> Temperature:
    if config.temperature == "fixed":
        return FixedTemperature(config.initial_alpha, device)
    target_entropy = -config.target_entropy_scale * action_dim
    return LearnedTemperature(config.initial_alpha, target_entropy, config.lr, device)


def stats_vector(
    q: torch.Tensor,
    q_loss: torch.Tensor,
    policy_loss: torch.Tensor,
    q_norm: torch.Tensor,
    policy_norm: torch.Tensor,
    alpha: torch.Tensor,
    limit: float,
    guard: bool,
) -> torch.Tensor:
    """The ``STAT_FIELDS`` vector; ``q`` is the first critic's values. ``guard`` off leaves the flags 0."""
    core = torch.stack([policy_norm, q_norm, q.mean(), q.std(), alpha, policy_loss, q_loss])
    clipped = (core[:2] > limit).float()
    if guard:  # losses, gradient norms, Q statistics: one flag each
        checked = torch.stack([q_loss, policy_loss, q_norm, policy_norm, core[2], core[3]]).view(3, 2)
        flags = (~torch.isfinite(checked).all(dim=1)).float()
    else:
        flags = torch.zeros(3, device=q.device)
    return torch.cat([core, clipped, flags])


def summarize_block(rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-update rows ``[n, len(STAT_FIELDS)]`` → the block's statistics ‖ index of the first flagged update.

    As ``acc = acc * keep + row`` over the rows: counts are summed, gauges are the last update's,
    a non-finite gauge anywhere in the block leaves the gauge non-finite, and the
    non-finite flags are those of the first flagged update (later ones only carry its NaN on).
    """
    gauges = rows[-1] + (rows[:-1] * 0).sum(dim=0)
    accumulated = torch.where(keep, rows.sum(dim=0), gauges)
    bad = rows[:, NONFINITE_SLICE].sum(dim=1) > 0
    first = torch.where(bad.any(), bad.float().argmax(), -1)
    flags = torch.where(bad.any(), rows[first.clamp(min=0), NONFINITE_SLICE], accumulated[NONFINITE_SLICE])
    accumulated = torch.cat([accumulated[: NONFINITE_SLICE.start], flags, accumulated[NONFINITE_SLICE.stop :]])
    return torch.cat([accumulated, first.float().reshape(1)])


def stats_from_vector(values: list[float], updates: int) -> UpdateStats:
    """Turn an accumulated statistics vector (read once per block) into ``UpdateStats``."""
    named = dict(zip(STAT_FIELDS, values, strict=True))
    counts = {k: int(round(v)) for k, v in named.items() if k in COUNT_FIELDS}
    gauges = {k: float(v) for k, v in named.items() if k not in COUNT_FIELDS}
    return UpdateStats(updates=updates, **gauges, **counts)


class SAC:
    """Networks, targets, optimizers and temperature of one learner, on one device."""

    def __init__(self, in_dim: int, action_dim: int, config: LearnerConfig, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.config = config
        self.device = device
        self.actor = Actor(in_dim, action_dim, config.hidden_sizes).to(device)
        self.critic = TwinCritic(in_dim, action_dim, config.hidden_sizes).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.lr, foreach=True)
        self.temperature = make_temperature(config, action_dim, device)
        self.reward_scale = torch.tensor(config.reward_scale, device=device)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed + 1)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        # Gauges are replaced by each update, counts are summed: acc = acc * KEEP + stats.
        self.keep = torch.tensor([1.0 if f in COUNT_FIELDS else 0.0 for f in STAT_FIELDS], device=device)
        self.grad_hook: GradHook | None = None
        self.updates_done = 0

    def update(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One SAC update on ``batch``; returns the statistics vector (device, no sync)."""
        cfg = self.config
        obs_in = torch.cat([batch["obs"], batch["context"]], dim=-1)
        next_in = torch.cat([batch["next_obs"], batch["next_context"]], dim=-1)
        alpha = self.temperature.alpha()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_in, self.noise)
            next_q1, next_q2 = self.critic_target(next_in, next_action)
            scaled_reward = batch["reward"] * self.reward_scale  # the one place rewards are scaled
            target = soft_q_target(
                scaled_reward, batch["terminated"], cfg.gamma, next_q1, next_q2, next_log_prob, alpha
            )

        q1, q2 = self.critic(obs_in, batch["action"])
        q_loss = critic_loss(q1, q2, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        if self.grad_hook is not None:
            self.grad_hook(self.updates_done, self.critic)
        q_norm = nn.utils.clip_grad_norm_(self._critic_params, cfg.max_grad_norm)
        self.critic_optimizer.step()

        action, log_prob = self.actor.sample(obs_in, self.noise)
        self.critic.requires_grad_(False)  # the policy loss must not leave gradients on the critics
        pq1, pq2 = self.critic(obs_in, action)
        self.critic.requires_grad_(True)
        policy_loss = actor_loss(alpha, log_prob, pq1, pq2)
        self.actor_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        policy_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        self.actor_optimizer.step()
        self.temperature.update(log_prob)
        polyak_update(self._target_params, self._critic_params, cfg.tau)
        self.updates_done += 1
        return stats_vector(
            q1.detach(), q_loss.detach(), policy_loss.detach(), q_norm, policy_norm, alpha, cfg.max_grad_norm, True
        )

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` updates on batches sampled from ``replay``; no host sync.

        Returns ``(vector, indices)`` as ``GraphedSAC.update_block`` does: the
        block's statistics (``summarize_block``) ‖ the index of the first
        flagged update (-1: none), and the replay rows ``[count, batch]`` each update used.
        """
        rows, indices = [], []
        for _ in range(count):
            index = replay.sample_indices(self.config.batch_size)
            indices.append(index)
            rows.append(self.update(replay.gather(index)))
        return summarize_block(torch.stack(rows), self.keep.bool()), torch.stack(indices)

    def set_learning_rate(self, lr: float) -> None:
        optimizers = [self.actor_optimizer, self.critic_optimizer]
        if isinstance(self.temperature, LearnedTemperature):
            optimizers.append(self.temperature.optimizer)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def learning_rate(self) -> float:
        return float(self.actor_optimizer.param_groups[0]["lr"])

    def device_snapshot(self) -> dict:
        """A copy of all mutable state, for rolling a bad block back (``GraphedSAC`` has a sync-free one)."""
        return copy.deepcopy(self.state_dict())

    def restore_device_snapshot(self, snapshot: dict) -> None:
        self.load_state_dict(copy.deepcopy(snapshot))

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "temperature": self.temperature.state_dict(),
            "reward_scale": float(self.reward_scale),
            "learning_rate": self.learning_rate(),
            "noise_rng": self.noise.get_state(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.temperature.load_state_dict(state["temperature"])
        self.reward_scale.fill_(state["reward_scale"])
        self.set_learning_rate(state["learning_rate"])
        self.noise.set_state(state["noise_rng"])
        self.updates_done = int(state["updates_done"])
