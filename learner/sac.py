"""SAC, defined once: networks, targets, optimizers and temperature of one learner, and its update step.

``step`` runs the losses of ``learner/losses.py`` on the stacked twin critics, the
policy's two forward passes in one batch, clipped Adam (``learner.optim.clipped_adam_step``)
with the learning rate as a device tensor, Polyak targets and a statistics vector with
non-finite flags, without a host sync. ``learner/graph.py`` replays ``sampled_step`` as a CUDA graph: the same step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch._utils import _unflatten_dense_tensors

from learner.checkpoint_io import SAC_LAYOUT as LAYOUT
from learner.config import LearnerConfig
from learner.losses import actor_loss, critic_loss, polyak_update, soft_q_target
from learner.networks import Actor, TwinCritic, policy_head
from learner.optim import AdamTensors, adam_state, clipped_adam_step, load_adam_state, make_adam
from learner.replay import ReplayBuffer, transition_layout
from learner.temperature import make_temperature, temperature_step
from learner.types import COUNT_FIELDS, FLAG_FIELDS, STAT_FIELDS

FLAGS = slice(len(STAT_FIELDS) - len(FLAG_FIELDS), len(STAT_FIELDS))

GradHook = Callable[[int, nn.Module], None]
"""Test hook run after the critic backward of update ``n`` (e.g. to inject a NaN gradient); runs eagerly."""


def stats_vector(
    q: torch.Tensor, q_loss: torch.Tensor, policy_loss: torch.Tensor, q_norm: torch.Tensor, policy_norm: torch.Tensor,
    alpha: torch.Tensor, limit: float, guard: bool,
) -> torch.Tensor:  # fmt: skip
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

    Counts are summed, gauges are the last update's (a non-finite gauge anywhere in
    the block leaves the gauge non-finite), and the non-finite flags are those of
    the first flagged update (later ones only carry its NaN on).
    """
    gauges = rows[-1] + (rows[:-1] * 0).sum(dim=0)
    accumulated = torch.where(keep, rows.sum(dim=0), gauges)
    bad = rows[:, FLAGS].sum(dim=1) > 0
    first = torch.where(bad.any(), bad.float().argmax(), -1)
    # index_select, not rows[first]: indexing by a 0-d tensor reads it on the host, a sync that drains the queue
    first_flags = rows[:, FLAGS].index_select(0, first.clamp(min=0).reshape(1))[0]
    flags = torch.where(bad.any(), first_flags, accumulated[FLAGS])
    return torch.cat([accumulated[: FLAGS.start], flags, first.float().reshape(1)])


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """TF32 for the CUDA matmuls run (or captured) inside, restored after: the switch is process-wide."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def precision_contexts(precision: str, device: torch.device) -> tuple[Callable, Callable]:
    """``(whole_step, forward)``: the contexts a step and its network forward passes run in. ``high``: TF32 on CUDA
    for the whole step (backward included); ``bf16``: bfloat16 autocast around the forward passes."""
    whole_step = tf32_matmuls if precision == "high" and device.type == "cuda" else contextlib.nullcontext
    if precision != "bf16":
        return whole_step, contextlib.nullcontext
    # cache_enabled=False: cached casts of the weights would be stale inside a replayed CUDA graph
    return whole_step, functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, cache_enabled=False)


MATH: dict[str, Callable] = {
    "policy_head": policy_head, "soft_q_target": soft_q_target, "critic_loss": critic_loss,
    "actor_loss": actor_loss, "stats_vector": stats_vector, "clipped_adam_step": clipped_adam_step,
    "polyak_update": polyak_update, "temperature_step": temperature_step,
}  # fmt: skip
"""The pure maths of a step; ``learner/graph.py`` swaps in their ``torch.compile``d versions."""


class SAC:
    """Networks, targets, optimizers and temperature of one learner, on one device, and its update."""

    def __init__(
        self, in_dim: int, action_dim: int, config: LearnerConfig, device: torch.device, seed: int, guard: bool = True,
        critic_in: int | None = None,
    ) -> None:  # fmt: skip
        """``in_dim``: the policy's input, the leading values of ``[obs ‖ context]``; ``critic_in`` (default the
        same): the critics' input, all of it (a context part for the critics only comes last)."""
        torch.manual_seed(seed)
        self.config, self.device, self.guard, self.action_dim = config, device, guard, action_dim
        self.policy_in = in_dim
        self.actor = Actor(in_dim, action_dim, config.hidden_sizes).to(device)
        self.critic = TwinCritic(critic_in or in_dim, action_dim, config.hidden_sizes).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.columns = transition_layout(critic_in or in_dim, action_dim)
        """Where an update finds state, action, reward, next state and termination in the replay's rows."""
        self.lr = torch.tensor(config.lr, dtype=torch.float32, device=device)
        """The one learning rate of policy, critics and temperature: a device tensor every optimizer holds."""
        self.actor_optimizer = make_adam(list(self.actor.parameters()), self.lr)
        self.critic_optimizer = make_adam(self.critic.ordered(), self.lr)
        self.actor_adam, self.critic_adam = AdamTensors.of(self.actor_optimizer), AdamTensors.of(self.critic_optimizer)
        """The optimizers' parameters and state as the lists ``clipped_adam_step`` takes."""
        self.temperature = make_temperature(
            config.temperature, config.initial_alpha, action_dim, config.target_entropy_scale, self.lr
        )
        self.reward_scale = torch.tensor(config.reward_scale, device=device)
        self.rates_in_force = (config.reward_scale, config.lr)
        """``(reward_scale, lr)`` as given: the device tensors hold them rounded to float32."""
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed + 1)
        self.keep = torch.tensor([name in COUNT_FIELDS for name in STAT_FIELDS], device=device)
        self.math = MATH
        self.precision, self.autocast = precision_contexts(config.matmul_precision, device)
        self.grad_hook: GradHook | None = None
        self.updates_done = 0
        self.replay_size = torch.ones((), dtype=torch.long, device=device)
        """Transitions in the replay buffer, as a device tensor (a captured graph samples all of them)."""
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        """The running block's next update: where ``sampled_step`` records its statistics and indices."""
        self.allocate_block(config.block_updates)

    # -- one update ---------------------------------------------------------------------------
    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """One SAC update on a batch of transitions, the replay's rows (``transition_rows``) on the device; returns
        the statistics vector (no host sync)."""
        with self.precision():
            return self._step(rows)

    def _step(self, rows: torch.Tensor) -> torch.Tensor:
        cfg, m, columns = self.config, self.math, self.columns
        obs_in, next_in = rows[:, columns["state"]], rows[:, columns["next_state"]]
        state_action = rows[:, columns["state"].start : columns["action"].stop]
        reward, terminated = rows[:, columns["reward"].start], rows[:, columns["terminated"].start]
        size = rows.shape[0]
        alpha = self.temperature.alpha()
        noise = torch.randn((2 * size, self.action_dim), generator=self.noise, device=self.device)
        with self.autocast():
            policy_out = self.actor.net(torch.cat([next_in, obs_in])[:, : self.policy_in]).float()
        actions, log_probs = m["policy_head"](policy_out, noise)
        with torch.no_grad(), self.autocast():
            next_q = self.critic_target(next_in, actions[:size]).float()
        with torch.no_grad():
            scaled_reward = reward * self.reward_scale  # the one place rewards are scaled
            target = m["soft_q_target"](scaled_reward, terminated, cfg.gamma, next_q, log_probs[:size], alpha)
        with self.autocast():
            q = self.critic.joined(state_action).float()
        q_loss = m["critic_loss"](q, target)
        q_norm = self._descend(self.critic_adam, q_loss, self.grad_hook)
        self.critic.requires_grad_(False)  # the policy loss must not leave gradients on the critics
        with self.autocast():
            policy_q = self.critic(obs_in, actions[size:]).float()
        self.critic.requires_grad_(True)
        policy_loss = m["actor_loss"](alpha, log_probs[size:], policy_q)
        policy_norm = self._descend(self.actor_adam, policy_loss)
        self.temperature.update(log_probs[size:].detach(), m["temperature_step"])
        m["polyak_update"](self.critic_target.ordered(), self.critic.ordered(), cfg.tau)
        return m["stats_vector"](
            q[0].detach(), q_loss.detach(), policy_loss.detach(), q_norm, policy_norm, alpha, cfg.max_grad_norm,
            self.guard,
        )  # fmt: skip

    def _descend(self, adam: AdamTensors, loss: torch.Tensor, hook: GradHook | None = None) -> torch.Tensor:
        """Backward, pre-clip global norm, clip, Adam step; returns the pre-clip norm."""
        for p in adam.params:
            p.grad = None
        loss.backward()
        if hook is not None:
            hook(self.updates_done, self.critic)
        return self.math["clipped_adam_step"](
            adam.params, [p.grad for p in adam.params], adam.exp_avgs, adam.exp_avg_sqs, adam.steps, adam.lr,
            self.config.max_grad_norm,
        )  # fmt: skip

    def update(self, rows: torch.Tensor) -> torch.Tensor:
        """One update on the transitions ``rows`` (counted); the statistics vector."""
        stats = self.step(rows)
        self.updates_done += 1
        return stats

    # -- blocks of updates on replay ------------------------------------------------------------
    def allocate_block(self, capacity: int) -> None:
        """Device buffers for the statistics and replay rows of up to ``capacity`` updates."""
        self.rows = torch.zeros((capacity, len(STAT_FIELDS)), device=self.device)
        self.indices = torch.zeros((capacity, self.config.batch_size), dtype=torch.long, device=self.device)

    def sampled_step(self, replay: ReplayBuffer) -> None:
        """Sample a batch on the device, update, and record its statistics and indices at the block's counter."""
        index = replay.sample_indices(self.config.batch_size, self.replay_size)
        stats = self.step(replay.gather(index))
        self.rows.index_copy_(0, self.counter, stats.unsqueeze(0))
        self.indices.index_copy_(0, self.counter, index.unsqueeze(0))
        self.counter.add_(1)

    def update_block(
        self, replay: ReplayBuffer, count: int, run_step: Callable[[], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` updates on batches sampled on the device (``run_step``: one ``sampled_step``, a CUDA-graph
        replay of it, say); no host sync. Returns the block's statistics ‖ the index of the first flagged
        update (-1: none), and the replay rows ``[count, batch]`` each update used."""
        return update_blocks([self], [replay], count, run_step)[0]

    def begin_block(self, replay: ReplayBuffer, count: int) -> None:
        """Ready the block buffers for ``count`` updates on ``replay`` (as it is now)."""
        if len(replay) == 0:
            raise ValueError("update_block needs a non-empty replay buffer")
        if count > self.rows.shape[0]:
            self.allocate_block(count)
        self.replay_size.fill_(len(replay))
        self.counter.zero_()

    def end_block(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return summarize_block(self.rows[:count], self.keep), self.indices[:count].clone()

    # -- rates ----------------------------------------------------------------------------------
    def set_rates(self, reward_scale: float, lr: float) -> None:
        """Device tensors filled in place (every optimizer holds ``self.lr``): captured graphs stay valid."""
        self.reward_scale.fill_(reward_scale)
        self.lr.fill_(lr)
        self.rates_in_force = (float(reward_scale), float(lr))

    # -- snapshots and checkpoints ----------------------------------------------------------------
    def optimizers(self) -> list[torch.optim.Adam]:
        return [self.actor_optimizer, self.critic_optimizer, *filter(None, [self.temperature.optimizer])]

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes in place (parameters, targets, log α, optimizer moments and steps)."""
        params = [*self.actor.parameters(), *self.critic.ordered(), *self.critic_target.ordered()]
        tensors = [p.data for p in params + self.temperature.parameters()]
        return tensors + [t for o in self.optimizers() for p in o.param_groups[0]["params"] for t in o.state[p].values()]

    def device_snapshot(self) -> dict:
        """A device copy of all mutable state and the noise RNG (no host sync), for rolling a bad block back."""
        return {"tensors": copies_of(self.state_tensors()), "noise_rng": self.noise.get_state(),
                "updates_done": self.updates_done}  # fmt: skip

    @torch.no_grad()
    def restore_device_snapshot(self, snapshot: dict) -> None:
        """In place: captured graphs stay valid."""
        torch._foreach_copy_(self.state_tensors(), snapshot["tensors"])
        self.noise.set_state(snapshot["noise_rng"])
        self.updates_done = snapshot["updates_done"]

    def state_dict(self) -> dict:
        return {
            "layout": LAYOUT,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": adam_state(self.actor_optimizer),
            "critic_optimizer": adam_state(self.critic_optimizer),
            "temperature": self.temperature.state_dict(),
            "reward_scale": self.rates_in_force[0],
            "learning_rate": self.rates_in_force[1],
            "noise_rng": self.noise.get_state(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a layout-2 state in place (captured graphs stay valid); ``checkpoint_read.upgrade_sac_state``
        converts older ones."""
        if state.get("layout") != LAYOUT:
            raise ValueError(f"SAC state layout {state.get('layout', 1)}: upgrade it with upgrade_sac_state first")
        for module in ("actor", "critic", "critic_target"):  # copies into the existing tensors
            getattr(self, module).load_state_dict(state[module])
        load_adam_state(self.actor_optimizer, state["actor_optimizer"])
        load_adam_state(self.critic_optimizer, state["critic_optimizer"])
        self.temperature.load_state_dict(state["temperature"])
        self.set_rates(state["reward_scale"], state["learning_rate"])
        self.noise.set_state(state["noise_rng"])
        self.updates_done = int(state["updates_done"])


def update_blocks(
    sacs: list[SAC], replays: list[ReplayBuffer], count: int, run_step: Callable[[], None] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` updates of every SAC (run) on its own replay, in lockstep (``run_step``: one ``sampled_step`` of each,
    one CUDA-graph replay of all of them, say). Runs share nothing, so each one's updates are those it would make
    alone. Per run: ``SAC.update_block``'s statistics ‖ first flagged update, and replay rows."""
    for sac, replay in zip(sacs, replays, strict=True):
        sac.begin_block(replay, count)
    pairs = list(zip(sacs, replays, strict=True))
    step = run_step or (lambda: [sac.sampled_step(replay) for sac, replay in pairs])
    for _ in range(count):
        step()
        for sac in sacs:
            sac.updates_done += 1  # the update number a grad_hook sees
    return [sac.end_block(count) for sac in sacs]


@torch.no_grad()
def copies_of(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of ``tensors`` held in one buffer per dtype (one ``cat``, then torch's unflatten into views): one
    allocation and a kernel or two rather than one of each per tensor (the service snapshots every block it
    launches). Not ``_flatten_dense_tensors``: for a single tensor it returns a view, not a copy."""
    copies: list[torch.Tensor] = list(tensors)
    for dtype in {t.dtype for t in tensors}:
        picked = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        group = [tensors[i] for i in picked]
        flat = torch.cat([t.reshape(-1) for t in group])
        for i, view in zip(picked, _unflatten_dense_tensors(flat, group), strict=True):
            copies[i] = view
    return copies
