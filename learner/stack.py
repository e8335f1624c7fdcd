"""SAC's update, defined once, for ``K`` runs stacked on a leading run dimension.

A ``RunStack`` holds every tensor an update changes — policy, twin critics, targets, temperature, Adam moments and
steps, learning rates and reward scales — as ``[K, ...]`` tensors, and runs the update of all ``K`` runs at once:
batched matrix products (``learner.networks.stacked_mlp`` / ``twin_q``), the losses of ``learner/losses.py`` per run,
each run's gradients clipped to its own norm and its own Adam rates (``learner.optim``), one Polyak update, and a
statistics row per run with its non-finite flags — no host sync. One run is a stack of one (``learner.sac.SAC``
owns it); ``train.parallel_runs`` joins runs of the same shapes into one stack, their tensors then views of the
joint ones, so each run's snapshots, rollbacks and checkpoints still act on its own slice. Runs share no generator:
each one's noise and replay samples are those it would draw alone, drawn for a whole block before it
(``draw_block``). ``learner/graph.py`` replays ``sampled_step`` as a CUDA graph: the same step. The first layers'
weights carry zero columns up to an aligned width (``ALIGNED_WIDTH``), which a run's networks do not show.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch._utils import _unflatten_dense_tensors

from learner.config import LearnerConfig
from learner.losses import actor_loss, critic_loss, polyak_update, soft_q_target
from learner.networks import bias_relu, bias_relu_fused, policy_head, stacked_mlp, twin_q
from learner.optim import AdamTensors, clipped_adam_step
from learner.replay import ReplayBuffer, joint_rows, transition_layout
from learner.temperature import make_temperature, temperature_step
from learner.types import COUNT_FIELDS, FLAG_FIELDS, STAT_FIELDS

FLAGS = slice(len(STAT_FIELDS) - len(FLAG_FIELDS), len(STAT_FIELDS))

GradHook = Callable[[int, list[torch.Tensor]], None]
"""Test hook run after the critic backward of update ``n`` with a run's critic gradients (e.g. to inject a NaN
gradient); runs eagerly."""


def stats_vector(
    q: torch.Tensor, q_loss: torch.Tensor, policy_loss: torch.Tensor, q_norm: torch.Tensor, policy_norm: torch.Tensor,
    alpha: torch.Tensor, limit: float, guard: bool,
) -> torch.Tensor:  # fmt: skip
    """The ``STAT_FIELDS`` vector, one per run: ``q`` ``[..., B]`` is the first critic's values, the others ``[...]``.
    ``guard`` off leaves the flags 0."""
    q = q.float()
    core = torch.stack([policy_norm, q_norm, q.mean(dim=-1), q.std(dim=-1), alpha, policy_loss, q_loss], dim=-1)
    clipped = (core[..., :2] > limit).float()
    if guard:  # losses, gradient norms, Q statistics: one flag each
        checked = torch.stack([q_loss, policy_loss, q_norm, policy_norm, core[..., 2], core[..., 3]], dim=-1)
        flags = (~torch.isfinite(checked.unflatten(-1, (3, 2))).all(dim=-1)).float()
    else:
        flags = torch.zeros_like(core[..., :3])
    return torch.cat([core, clipped, flags], dim=-1)


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


ALIGNED_WIDTH = 8
"""The first layers' inputs are zero-padded to a multiple of this many features (16 bytes of bfloat16), their weights
by as many zero columns, which stay zero (their gradients are products with the zero inputs). cuBLAS multiplies an
unaligned width with slower kernels: on an H200, 8 runs at batch 256 in TF32, 55 input features took 8.4 µs a product
against 3.6 for 56, and 49 took 11.7 against 5.1 for 52 (``bench/results/block_draws/first_layer_alignment.txt``)."""


def aligned(width: int) -> int:
    """``width`` rounded up to a multiple of ``ALIGNED_WIDTH``."""
    return -(-width // ALIGNED_WIDTH) * ALIGNED_WIDTH


def layer_input(parts: list[torch.Tensor], dim: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """A first layer's input: ``parts`` joined along ``dim``, zero-padded on the right to ``width`` features, in the
    products' ``dtype`` (one kernel through torch.compile: the join, the padding and the cast fused)."""
    x = torch.cat(parts, dim=dim) if len(parts) > 1 else parts[0]
    return torch.nn.functional.pad(x, (0, width - x.shape[-1])).to(dtype)


def unpadded(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading ``shape`` of ``tensor`` (a view): a run's parameter without its alignment columns."""
    return tensor[tuple(slice(0, n) for n in shape)]


def low_precision_copies(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``tensors`` cast to ``dtype``, as views of one buffer: a cat and a cast (one kernel through torch.compile),
    not a cast of each weight at each use (autocast's way: 30 small kernels per update, 7.5 % of its kernel time at
    batch 4 096 on an H200)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).to(dtype)
    return list(_unflatten_dense_tensors(flat, tensors))


MATH: dict[str, Callable] = {
    "policy_head": policy_head, "soft_q_target": soft_q_target, "critic_loss": critic_loss,
    "actor_loss": actor_loss, "stats_vector": stats_vector, "clipped_adam_step": clipped_adam_step,
    "polyak_update": polyak_update, "temperature_step": temperature_step, "low_precision_copies": low_precision_copies,
    "bias_relu": bias_relu, "layer_input": layer_input,
}  # fmt: skip
"""The pure maths of a step; ``learner/graph.py`` swaps in their ``torch.compile``d versions (of ``COMPILED_FORMS``
where a function has one)."""

COMPILED_FORMS: dict[str, Callable] = {"bias_relu": bias_relu_fused}
"""A function compiled from another form than its eager one: ``bias_relu`` eager writes its bias gradient as a GEMV
(faster than autograd's sum); plainly written, compiled, its add, ReLU and their gradients with the bias's sum fuse
into a kernel or two (the hidden layers' bias copies and ReLUs were 16 % of an update's kernel time at batch 4 096 in
bf16 on an H200)."""


@dataclass(frozen=True)
class StackSpec:
    """What runs stacked together must share: the shapes of their networks and batches, and the update's constants.
    A run's own are its seed, learning rate, reward scale and initial temperature."""

    policy_in: int
    critic_in: int
    action_dim: int
    hidden_sizes: tuple[int, ...]
    batch_size: int
    gamma: float
    tau: float
    max_grad_norm: float
    temperature: str
    target_entropy_scale: float
    matmul_precision: str
    block_updates: int
    guard: bool
    device: torch.device

    @staticmethod
    def of(config: LearnerConfig, policy_in: int, critic_in: int, action_dim: int, device: torch.device,
           guard: bool) -> StackSpec:  # fmt: skip
        return StackSpec(policy_in, critic_in, action_dim, tuple(config.hidden_sizes), config.batch_size, config.gamma,
                         config.tau, config.max_grad_norm, config.temperature, config.target_entropy_scale,
                         config.matmul_precision, config.block_updates, guard, device)  # fmt: skip


def layer_shapes(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int) -> list[tuple[int, int]]:
    """``(out, in)`` of every linear layer of an MLP."""
    widths = [in_dim, *hidden_sizes, out_dim]
    return list(zip(widths[1:], widths[:-1], strict=True))


class RunStack:
    """The state and update of ``K`` runs (``runs``: objects with ``noise``, ``grad_hook`` and ``updates_done``),
    allocated at zero; ``learner.sac.SAC`` fills a stack of one, ``join`` stacks several."""

    def __init__(self, runs: list, spec: StackSpec) -> None:
        self.runs, self.spec, self.device = list(runs), spec, spec.device
        k, device = len(self.runs), spec.device

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros((k, *shape), device=device)

        self.input_widths = aligned(spec.policy_in), aligned(spec.critic_in + spec.action_dim)
        """The policy's and the critics' first-layer input widths (``ALIGNED_WIDTH``)."""
        actor_layers = layer_shapes(self.input_widths[0], spec.hidden_sizes, 2 * spec.action_dim)
        critic_layers = layer_shapes(self.input_widths[1], spec.hidden_sizes, 1)
        self.actor = [nn.Parameter(t) for o, i in actor_layers for t in (zeros(o, i), zeros(o))]
        """Policy weights and biases, layer by layer: ``[K, out, in]``, ``[K, out]``."""
        self.critic = [nn.Parameter(t) for o, i in critic_layers for t in (zeros(2, o, i), zeros(2, o))]
        """Twin critics, layer by layer: ``[K, 2, out, in]``, ``[K, 2, out]``."""
        self.target = [torch.zeros_like(p) for p in self.critic]
        self.actor_adam, self.critic_adam = AdamTensors.zeros_for(self.actor), AdamTensors.zeros_for(self.critic)
        self.temperature = make_temperature(spec.temperature, torch.ones(k, device=device), spec.action_dim,
                                            spec.target_entropy_scale)  # fmt: skip
        self.lr, self.reward_scale = zeros(), zeros()
        self.columns = transition_layout(spec.critic_in, spec.action_dim)
        """Where an update finds state, action, reward, next state and termination in the replay's rows."""
        self.keep = torch.tensor([name in COUNT_FIELDS for name in STAT_FIELDS], device=device)
        self.math = MATH
        self.precision = tf32_matmuls if spec.matmul_precision == "high" and device.type == "cuda" else contextlib.nullcontext
        """``high``: TF32 for the whole step, backward included."""
        self.low_dtype = torch.bfloat16 if spec.matmul_precision == "bf16" else None
        """``bf16``: the forward products on bfloat16 copies of the weights (``low_precision_copies``)."""
        self.replay_sizes = torch.ones(k, dtype=torch.long, device=device)
        """Transitions in each run's replay buffer, as a device tensor (a captured graph samples all of them)."""
        self.joint_replay: torch.Tensor | None = None
        """The runs' replays' joint rows (``joint_rows``) where they are joined: a step then gathers all batches from
        it at once. Set with the replay sizes, for a block (``set_replay_sizes``)."""
        self.replay_offsets = torch.zeros((k, 1, 1), dtype=torch.long, device=device)
        """Where each run's rows start in ``joint_replay``, flattened; 0 where the replays are apart. The block's draws
        carry them (``draw_block``), so a step gathers from the joint tensor as drawn."""
        self.ones = torch.ones(k, device=device)
        """Each run's loss's gradient seed (``_descend``)."""
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        """The running block's next update: where ``sampled_step`` reads its draws and records its statistics."""
        self.allocate_block(spec.block_updates)

    # -- its tensors --------------------------------------------------------------------------
    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes in place (parameters, targets, temperature, Adam moments and steps)."""
        return [*self.actor, *self.critic, *self.target, *self.temperature.tensors(), *self.actor_adam.tensors(),
                *self.critic_adam.tensors()]  # fmt: skip

    def all_tensors(self) -> list[torch.Tensor]:
        """``state_tensors`` and the rates."""
        return [*self.state_tensors(), self.lr, self.reward_scale]

    @staticmethod
    @torch.no_grad()
    def join(stacks: list[RunStack]) -> RunStack:
        """One stack of all runs of ``stacks`` (the same ``spec``), holding their values; each given stack's tensors
        become views of the joint ones (so what a run does alone or joined acts on the same memory). A CUDA graph of
        a given stack captured before the join captures again on its next use (``GraphedBlocks`` sees the move)."""
        specs = {s.spec for s in stacks}
        if len(specs) != 1:
            raise ValueError(f"runs stacked together need one spec, got {len(specs)}")
        joint = RunStack([run for s in stacks for run in s.runs], stacks[0].spec)
        start = 0
        for s in stacks:
            end = start + len(s.runs)
            for mine, theirs in zip(s.all_tensors(), joint.all_tensors(), strict=True):
                theirs[start:end].copy_(mine)
                mine.data = theirs.data[start:end]
            start = end
        for run in joint.runs:
            run.alias_modules()
        return joint

    def zero_grad(self) -> None:
        for p in self.actor + self.critic:
            p.grad = None

    def generators(self) -> list[torch.Generator]:
        return [run.noise for run in self.runs]

    def snapshot(self) -> list[torch.Tensor]:
        """A device copy of ``state_tensors`` (no host sync)."""
        return copies_of(self.state_tensors())

    @torch.no_grad()
    def restore(self, snapshot: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.state_tensors(), snapshot)

    # -- one update ---------------------------------------------------------------------------
    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """One SAC update of every run on its batch ``rows[k]`` (``[K, B, columns]``, the replay's rows) on the device;
        returns the statistics ``[K, len(STAT_FIELDS)]`` (no host sync)."""
        noise = torch.empty((len(self.runs), 2 * rows.shape[1], self.spec.action_dim), device=self.device)
        return self.step_with(rows, self.fill_noise(noise))

    def step_with(self, rows: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``step`` on given policy noise ``[K, 2 * B, action_dim]`` (the next states' actions, then the states')."""
        with self.precision():
            return self._step(rows, noise)

    def _step(self, rows: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        spec, m, columns = self.spec, self.math, self.columns
        relu = m["bias_relu"]
        obs_in, next_in = rows[..., columns["state"]], rows[..., columns["next_state"]]
        state_action = rows[..., columns["state"].start : columns["action"].stop]
        reward, terminated = rows[..., columns["reward"].start], rows[..., columns["terminated"].start]
        size = rows.shape[1]
        alpha = self.temperature.alpha().unsqueeze(-1)
        actor_low, critic_low, target_low = self.low_precision(self.actor, self.critic, self.target)
        dtype, (policy_width, critic_width) = self.low_dtype or torch.float32, self.input_widths
        policy_in = m["layer_input"]([next_in[..., : spec.policy_in], obs_in[..., : spec.policy_in]], 1, policy_width,
                                     dtype)  # fmt: skip
        # the networks' outputs stay in their dtype: the maths cast them to float32 (fused, once compiled; in bf16
        # a cast of each after its product was 7 copy kernels per update at batch 4 096 on an H200)
        policy_out = stacked_mlp(policy_in, self.actor[0::2], self.actor[1::2], actor_low, relu)
        actions, log_probs = m["policy_head"](policy_out, noise)
        next_actions, new_actions = actions[:, :size], actions[:, size:]
        with torch.no_grad():
            next_q = twin_q(m["layer_input"]([next_in, next_actions], -1, critic_width, dtype), self.target[0::2],
                            self.target[1::2], target_low, relu)  # fmt: skip
            scaled_reward = reward * self.reward_scale.unsqueeze(-1)  # the one place rewards are scaled
            target = m["soft_q_target"](scaled_reward, terminated, spec.gamma, next_q, log_probs[:, :size], alpha)
        q = twin_q(m["layer_input"]([state_action], -1, critic_width, dtype), self.critic[0::2], self.critic[1::2],
                   critic_low, relu)  # fmt: skip
        q_loss = m["critic_loss"](q, target)
        q_norm = self._descend(self.critic_adam, q_loss, critic=True)
        for p in self.critic:  # the policy loss must not leave gradients on the critics
            p.requires_grad_(False)
        (critic_low,) = self.low_precision(self.critic)  # the critics as their step left them
        policy_q = twin_q(m["layer_input"]([obs_in, new_actions], -1, critic_width, dtype), self.critic[0::2],
                          self.critic[1::2], critic_low, relu)  # fmt: skip
        for p in self.critic:
            p.requires_grad_(True)
        policy_loss = m["actor_loss"](alpha, log_probs[:, size:], policy_q)
        policy_norm = self._descend(self.actor_adam, policy_loss)
        self.temperature.update(log_probs[:, size:].detach(), self.lr, m["temperature_step"])
        m["polyak_update"](self.target, self.critic, spec.tau)
        return m["stats_vector"](
            q[:, 0].detach(), q_loss.detach(), policy_loss.detach(), q_norm, policy_norm, alpha.squeeze(-1),
            spec.max_grad_norm, spec.guard,
        )  # fmt: skip

    def low_precision(self, *networks: list[torch.Tensor]) -> list[list | None]:
        """Each network's low-precision copies (``bf16``), layer by layer ``(weight, bias)``: one cast of all of them
        (``low_precision_copies``); Nones in float32."""
        if self.low_dtype is None:
            return [None] * len(networks)
        copies = iter(self.math["low_precision_copies"]([t for net in networks for t in net], self.low_dtype))
        return [[(next(copies), next(copies)) for _ in range(len(net) // 2)] for net in networks]

    def fill_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Fill ``noise`` ``[K, ...]`` with standard normals, each run's slice from its own generator; returns it."""
        for run_noise, generator in zip(noise, self.generators(), strict=True):  # into its slice: no stacking copy
            torch.randn(run_noise.shape, generator=generator, device=self.device, out=run_noise)
        return noise

    def _descend(self, adam: AdamTensors, losses: torch.Tensor, critic: bool = False) -> torch.Tensor:
        """Backward of every run's loss, per-run pre-clip global norms, clip, Adam step; returns the norms ``[K]``."""
        for p in adam.params:
            p.grad = None
        # runs share no parameter: each one's gradient is its own loss's. Seeded with ones, not through a sum: the
        # sum's backward hands the loss's a stride-0 [K] gradient, which the compiled loss copies when K > 1 (with the
        # sum and its seed's fill: 6 kernels per update at 8 runs, 4 at one)
        losses.backward(self.ones)
        if critic:
            for k, run in enumerate(self.runs):
                if run.grad_hook is not None:
                    run.grad_hook(run.updates_done, [p.grad[k] for p in adam.params])
        return self.math["clipped_adam_step"](
            adam.params, [p.grad for p in adam.params], adam.exp_avgs, adam.exp_avg_sqs, adam.step, self.lr,
            self.spec.max_grad_norm,
        )  # fmt: skip

    # -- blocks of updates on replay ------------------------------------------------------------
    def allocate_block(self, capacity: int) -> None:
        """Device buffers for the draws and statistics of up to ``capacity`` updates of every run."""
        k, spec = len(self.runs), self.spec
        self.rows = torch.zeros((k, capacity, len(STAT_FIELDS)), device=self.device)
        self.indices = torch.zeros((k, capacity, spec.batch_size), dtype=torch.long, device=self.device)
        """Each update's replay rows, drawn for the whole block (``draw_block``)."""
        self.block_noise = torch.zeros((k, capacity, 2 * spec.batch_size, spec.action_dim), device=self.device)
        """Each update's policy noise, drawn for the whole block."""

    def draw_block(self, replays: list[ReplayBuffer], count: int) -> None:
        """Every random number of the block's ``count`` updates, before them: per run, its sampler's next ``count *
        batch`` draws (mapped into its replay by one remainder for all runs, then to its rows of the joint tensor by
        its offset) and its noise generator's next ``count`` updates' noise. Two kernels per run and block, not per
        update, and the block's CUDA graph draws nothing (a graph that draws refills every generator's seed and offset
        at each replay): at 8 runs, batch 256, the per-update draws were 16 kernels, and 8 runs trained 18 727
        updates/s on an H200 with them, 20 621 without."""
        draws = self.indices[:, :count]
        for replay, run_draws in zip(replays, draws, strict=True):
            replay.draw(run_draws.numel(), out=run_draws.view(-1))
        draws.remainder_(self.replay_sizes.view(-1, 1, 1)).add_(self.replay_offsets)
        self.fill_noise(self.block_noise[:, :count])

    def sampled_step(self, replays: list[ReplayBuffer]) -> None:
        """Update every run on the block's draws at its counter (``draw_block``) from ``replays`` (those the block
        began on: ``set_replay_sizes``), and record the statistics there."""
        index = self.indices.index_select(1, self.counter).squeeze(1)
        if self.joint_replay is None:
            batch = along_runs([replay.gather(rows) for replay, rows in zip(replays, index, strict=True)])
        else:  # one gather for all runs (a gather per run was 8 kernels and 34 µs per update at 8 runs on an H200)
            batch = self.joint_replay.flatten(0, 1)[index]
        stats = self.step_with(batch, self.block_noise.index_select(1, self.counter).squeeze(1))
        self.rows.index_copy_(1, self.counter, stats.unsqueeze(1))
        self.counter.add_(1)

    def begin_block(self, replays: list[ReplayBuffer], count: int) -> None:
        """Ready the block buffers for ``count`` updates on ``replays`` (as they are now), their draws made."""
        if any(len(replay) == 0 for replay in replays):
            raise ValueError("update_block needs a non-empty replay buffer")
        if count > self.rows.shape[1]:
            self.allocate_block(count)
        self.set_replay_sizes(replays)
        self.draw_block(replays, count)
        self.counter.zero_()

    def set_replay_sizes(self, replays: list[ReplayBuffer]) -> None:
        """What a (captured) step samples from: each replay's rows now (at least one: a capture may see an empty one),
        and whether the replays are joined."""
        self.joint_replay = joint_rows(replays)
        for k, replay in enumerate(replays):
            self.replay_sizes[k].fill_(max(len(replay), 1))
            self.replay_offsets[k].fill_(0 if self.joint_replay is None else k * replay.rows.shape[0])

    def end_block(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per run: the block's statistics ‖ first flagged update, and the replay rows ``[count, batch]`` it used."""
        return [(summarize_block(self.rows[k, :count], self.keep), self.indices[k, :count] - self.replay_offsets[k])
                for k in range(len(self.runs))]  # fmt: skip


def along_runs(parts: list[torch.Tensor]) -> torch.Tensor:
    """Each run's tensor stacked on a leading run dimension; one run's is a view (no copy on the hot path)."""
    return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)


def update_blocks(
    stacks: list[RunStack], replays: list[list[ReplayBuffer]], count: int,
    run_steps: Callable[[int], int] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``count`` updates of every run of every stack on its own replay (``replays[s][k]``), in lockstep
    (``run_steps(n)``: up to ``n`` ``sampled_step``s of each stack, returning how many it made — a CUDA-graph
    replay of several, say; otherwise one eager step at a time). Runs share nothing, so each one's updates are those
    it would make alone. Per run, stack by stack: ``SAC.update_block``'s statistics ‖ first flagged update, and
    replay rows."""
    for stack, stack_replays in zip(stacks, replays, strict=True):
        stack.begin_block(stack_replays, count)
    pairs = list(zip(stacks, replays, strict=True))

    def one_step(_: int) -> int:
        for stack, stack_replays in pairs:
            stack.sampled_step(stack_replays)
        return 1

    step, done = run_steps or one_step, 0
    while done < count:
        made = step(count - done)
        for stack in stacks:
            for run in stack.runs:
                run.updates_done += made  # the update number a grad_hook sees (hooks step one at a time)
        done += made
    return [result for stack in stacks for result in stack.end_block(count)]


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
