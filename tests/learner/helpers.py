"""Small builders shared by learner tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from learner.config import LearnerConfig, ReplayConfig
from learner.learner import Dimensions, Learner
from learner.replay import transition_rows
from learner.types import Fragment

DIMS = Dimensions(obs_dim=3, context_dim=2, action_dim=1)
SMALL = LearnerConfig(hidden_sizes=(16, 16), lr=1e-3, gamma=0.9, batch_size=8, reward_scale=1.0, block_updates=5)


def make_learner(config: LearnerConfig = SMALL, capacity: int = 1000, seed: int = 0) -> Learner:
    return Learner(DIMS, config, ReplayConfig(capacity=capacity), torch.device("cpu"), seed)


def random_batch(size: int = 8, seed: int = 0, reward_scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(size, DIMS.obs_dim, generator=g),
        "context": torch.randn(size, DIMS.context_dim, generator=g),
        "action": torch.rand(size, DIMS.action_dim, generator=g) * 2 - 1,
        "reward": torch.randn(size, generator=g) * reward_scale,
        "next_obs": torch.randn(size, DIMS.obs_dim, generator=g),
        "next_context": torch.randn(size, DIMS.context_dim, generator=g),
        "terminated": (torch.rand(size, generator=g) < 0.2).float(),
    }


def random_rows(size: int = 8, seed: int = 0, reward_scale: float = 1.0) -> torch.Tensor:
    """``random_batch`` as the replay's rows (what ``SAC.update`` takes)."""
    return transition_rows(random_batch(size, seed, reward_scale))


def make_fragment(steps: int = 4, envs: int = 2, seq: int = 1, actor_id: int = 0, incarnation: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal((steps, envs, *shape)).astype(np.float32)

    return Fragment(
        obs=arr(DIMS.obs_dim), context=arr(DIMS.context_dim), action=np.tanh(arr(DIMS.action_dim)),
        reward=arr(), next_obs=arr(DIMS.obs_dim), next_context=arr(DIMS.context_dim),
        terminated=np.zeros((steps, envs), bool), truncated=np.zeros((steps, envs), bool),
        valid=np.ones((steps, envs), bool), actor_id=actor_id, incarnation=incarnation, seq=seq, weights_version=0,
    )  # fmt: skip


def with_config(**changes) -> LearnerConfig:
    return dataclasses.replace(SMALL, **changes)


# -- checkpoints -----------------------------------------------------------------------------


def make_state(seed: int = 0) -> dict:
    """A checkpoint state with every awkward leaf: optimizer state, float64, -0.0, a denormal, bfloat16, RNG."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    net(torch.randn(4, 3)).square().sum().backward()
    opt.step()
    return {
        "policy": net.state_dict(),
        "optim": opt.state_dict(),
        "log_alpha": torch.tensor(-0.25, dtype=torch.float64),
        "odd": torch.tensor([-0.0, 1e-40, 3.5], dtype=torch.float32),  # sign of zero and a denormal
        "half": torch.arange(5, dtype=torch.bfloat16) / 3,
        "rng": {"torch": torch.get_rng_state(), "python": [3, 1, 4]},
        "reward_scale": 0.001,
        "counters": {"env_steps": 12345, "updates": 678},
        "note": "seed",
    }


def make_replay(n: int = 32) -> dict:
    return {"storage": {"obs": torch.linspace(-1, 1, n * 3).reshape(n, 3)}, "position": n % 7, "size": n}


RUN_ALONE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""A run in a stack against the same run alone: stacked products and reductions over several runs round
differently from one run's (on some CPUs too), so the two agree to float32 rounding, not bit for bit."""


def assert_same_state(a: object, b: object, where: str = "") -> None:
    """``assert_bitwise``, with floating-point tensors equal to ``RUN_ALONE_TOLERANCE`` (other values exactly)."""
    assert_same_tree(a, b, where, RUN_ALONE_TOLERANCE)


def assert_bitwise(a: object, b: object, where: str = "") -> None:
    """``a`` and ``b`` hold the same keys, types, dtypes, shapes and bytes (``where`` names the first difference)."""
    assert_same_tree(a, b, where, None)


def assert_same_tree(a: object, b: object, where: str, tolerance: dict | None) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}.{key}", tolerance)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}[{i}]", tolerance)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        if tolerance and a.is_floating_point():
            torch.testing.assert_close(a, b, **tolerance, msg=where)
        else:
            as_bytes = lambda t: t.reshape(-1).contiguous().view(torch.uint8)  # noqa: E731
            assert torch.equal(as_bytes(a), as_bytes(b)), where
    else:
        assert type(a) is type(b) and repr(a) == repr(b), where


def flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


SEED_TAGS = {"train/policy_grad_norm", "train/q_grad_norm", "train/q_mean", "train/q_std"}
"""The TensorBoard tags of the seed's single-process script."""


def read_back(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``log_dir``, read with TensorBoard's own event reader: tag → [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
