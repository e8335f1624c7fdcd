"""The learner: replay ingestion, blocks of SAC updates, snapshots, and published weights."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from learner.config import LearnerConfig, ReplayConfig
from learner.graph import graphed_for, warm_up_device
from learner.replay import ReplayBuffer
from learner.sac import SAC
from learner.types import Fragment, UpdateStats, VersionedWeights
from learner.weights import GateVerdict, WeightGate, all_finite, make_versioned

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when visible, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("learner.device is 'cuda' but no CUDA device is visible")
    return torch.device(name)


@dataclass(frozen=True)
class Dimensions:
    obs_dim: int
    context_dim: int
    action_dim: int
    policy_context_dim: int | None = None
    """The leading context values the policy sees (None: all); the critics see all ``context_dim``."""

    @property
    def policy_in(self) -> int:
        return self.obs_dim + (self.context_dim if self.policy_context_dim is None else self.policy_context_dim)

    @property
    def critic_in(self) -> int:
        return self.obs_dim + self.context_dim


@dataclass(frozen=True)
class BlockResult:
    """A block of updates: its statistics, and the index of the first non-finite update (if any)."""

    stats: UpdateStats
    first_bad_index: int | None
    batch_indices: torch.Tensor
    """``[updates, batch]`` replay indices each update used (for emergency checkpoints and replays)."""
    ended_at: int
    """The learner's update count at the block's end (a block launched after it has moved the counter on)."""


@dataclass(frozen=True)
class LaunchedResult:
    """A launched block's result on its way to the host. On CUDA the statistics are copied into pinned host memory
    right behind the block, so ``read`` waits for that block only, not for blocks launched after it."""

    count: int
    vector: torch.Tensor
    """The statistics ‖ first flagged update (on CUDA: a pinned host copy, being filled)."""
    batch_indices: torch.Tensor
    ended_at: int
    copied: torch.cuda.Event | None = None

    def read(self) -> BlockResult:
        if self.copied is not None:
            self.copied.synchronize()
        return block_result(self.vector, self.batch_indices, self.count, self.ended_at)


class LearnerState(TypedDict):
    """Everything a checkpoint holds (plain containers: loadable with ``weights_only=True``)."""

    sac: dict
    counters: dict
    seen_fragments: list
    torch_rng: torch.Tensor


class Learner:
    """Owns SAC, the replay buffer and the counters; no Ray, no actors."""

    def __init__(self, dims: Dimensions, config: LearnerConfig, replay: ReplayConfig, device: torch.device, seed: int):
        self.dims = dims
        self.config = config
        self.device = device
        self.sac = SAC(dims.policy_in, dims.action_dim, config, device, seed, critic_in=dims.critic_in)
        # On CUDA a block's updates are CUDA-graph replays (``learner.fast_path``); elsewhere eager.
        fast = device.type == "cuda" and config.fast_path != "off"
        self.blocks = graphed_for(self.sac.stack, config.fast_path) if fast else self.sac
        self.replay = ReplayBuffer(replay.capacity, dims.obs_dim, dims.context_dim, dims.action_dim, device, seed + 2)
        if fast:
            warm_up_device(self.sac.stack, [self.replay])
        self.gate = WeightGate(self.policy_tensors(), dims.policy_in, dims.action_dim, config.hidden_sizes)
        self.env_steps = 0
        self.weights_version = 0
        self._last_seq: dict[tuple[int, int], int] = {}
        self.export_hook: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
        """Test hook applied to the exported policy tensors before the gate sees them."""

    # -- ingestion -------------------------------------------------------------------------
    def ingest(self, fragment: Fragment) -> int:
        """Count a fragment's environment steps and insert its valid transitions; returns transitions stored.

        A fragment already seen (same actor, incarnation and an old seq) is ignored entirely: -1.
        Incarnations are unique per process start, so only a true redelivery can match.
        """
        source = (fragment.actor_id, fragment.incarnation)
        if fragment.seq <= self._last_seq.get(source, -1):
            log.warning("duplicate fragment %s ignored", fragment.key)
            return -1
        self._last_seq[source] = fragment.seq
        self.env_steps += fragment.env_steps
        valid = fragment.valid.reshape(-1)
        batch = {
            name: torch.from_numpy(np.ascontiguousarray(flatten(getattr(fragment, name))[valid]))
            for name in ("obs", "context", "action", "reward", "next_obs", "next_context", "terminated")
        }
        self.replay.add(batch)
        return int(valid.sum())

    # -- updates ---------------------------------------------------------------------------
    def update_block(self, count: int) -> BlockResult:
        """Run ``count`` updates; the host reads the accumulated statistics once, at the end."""
        return self.launch_block(count).read()

    def launch_block(self, count: int) -> LaunchedResult:
        """Start ``count`` updates without waiting for them (on CUDA: sampling and updates in the graph)."""
        vector, indices = self.blocks.update_block(self.replay, count)
        return launched_result(vector, indices, count, self.updates_done)

    def replay_updates(self, indices: torch.Tensor) -> None:
        """Re-run updates on recorded batch indices (after a restore: reproduces the block's good prefix)."""
        for index in indices:
            self.sac.update(self.replay.gather(index))

    def set_rates(self, reward_scale: float, lr: float) -> None:
        """The reward scale and learning rate in force (remedies, resume overrides); device tensors, no re-capture."""
        self.sac.set_rates(reward_scale, lr)

    def rates(self) -> tuple[float, float]:
        """``(reward_scale, lr)`` in force."""
        return self.sac.rates_in_force

    # -- snapshots and state ---------------------------------------------------------------
    def snapshot(self) -> dict:
        """A device copy of networks, targets, optimizers, temperature and RNGs (for rollback)."""
        return self.sac.device_snapshot()

    def undo_point(self) -> tuple[dict, torch.Tensor]:
        """What undoes the next block: the snapshot, and the replay sampler's generator state."""
        return self.snapshot(), self.replay.generator.get_state()

    def restore(self, snapshot: dict) -> None:
        self.sac.restore_device_snapshot(snapshot)

    def parameters_finite(self) -> bool:
        tensors = {**prefixed("actor", self.sac.actor), **prefixed("critic", self.sac.critic)}
        tensors.update(prefixed("target", self.sac.critic_target))
        tensors["alpha"] = self.sac.alpha()
        return all_finite(tensors)

    def state_dict(self) -> LearnerState:
        return LearnerState(
            sac=self.sac.state_dict(),
            counters={"env_steps": self.env_steps, "weights_version": self.weights_version},
            seen_fragments=[[a, i, s] for (a, i), s in sorted(self._last_seq.items())],
            torch_rng=torch.get_rng_state(),
        )

    def load_state_dict(self, state: LearnerState) -> None:
        self.sac.load_state_dict(state["sac"])
        self.env_steps = int(state["counters"]["env_steps"])
        self.weights_version = int(state["counters"]["weights_version"])
        self._last_seq = {(int(a), int(i)): int(s) for a, i, s in state["seen_fragments"]}
        torch.set_rng_state(state["torch_rng"])

    # -- weights ---------------------------------------------------------------------------
    def policy_tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self.sac.actor.state_dict().items()}

    def publish(self) -> tuple[VersionedWeights | None, GateVerdict]:
        """Gate the current policy; on acceptance return it as the next version."""
        tensors = self.policy_tensors()
        if self.export_hook is not None:
            tensors = self.export_hook(tensors)
        verdict = self.gate.check(tensors)
        if not verdict.accepted:
            log.warning("weight broadcast rejected (%s): %s", verdict.reason, verdict.detail)
            return None, verdict
        self.weights_version += 1
        return make_versioned(self.weights_version, tensors), verdict

    @property
    def updates_done(self) -> int:
        return self.sac.updates_done


def launched_result(vector: torch.Tensor, indices: torch.Tensor, count: int, ended_at: int) -> LaunchedResult:
    """A block just launched (``SAC.update_block``'s result), its statistics on their way to the host."""
    if vector.device.type != "cuda":
        return LaunchedResult(count, vector, indices, ended_at)
    host = torch.empty(vector.shape, dtype=vector.dtype, pin_memory=True)
    host.copy_(vector, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return LaunchedResult(count, host, indices, ended_at, copied)


def block_result(vector: torch.Tensor, indices: torch.Tensor, count: int, ended_at: int) -> BlockResult:
    """``SAC.update_block``'s result as a ``BlockResult`` (the one host sync of a block), ending at update
    ``ended_at``."""
    values = vector.tolist()
    bad_index = int(values[-1])
    stats = UpdateStats.from_vector(values[:-1], count)
    return BlockResult(stats, bad_index if bad_index >= 0 else None, indices, ended_at)


def flatten(array: np.ndarray) -> np.ndarray:
    """``[k, n, ...]`` → ``[k*n, ...]``."""
    return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": tensor for name, tensor in module.state_dict().items()}
