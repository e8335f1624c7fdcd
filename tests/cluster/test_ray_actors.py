"""``cluster.ray_actors`` without Ray: the fault-injection hooks the actors install, and the fragment header.

The actors themselves run in tests/e2e/test_ray.py and tests/e2e/test_learner_recovery.py.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from cluster import ray_actors
from cluster.ray_actors import FragmentHeader, TestHooks, crash_in_checkpoint, nan_gradient_at, poison


class Exited(Exception):
    pass


def test_test_hooks_are_off_by_default_and_not_collected_by_pytest() -> None:
    assert dataclasses.astuple(TestHooks()) == (-1, -1, -1)
    assert TestHooks.__test__ is False


def test_the_fragment_header_is_frozen() -> None:
    header = FragmentHeader(actor_id=1, incarnation=2, seq=3, env_steps=50, weights_version=4, episodes=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.env_steps = 0  # type: ignore[misc]


def test_the_checkpoint_crash_fires_only_before_the_rename_from_its_step_on(monkeypatch) -> None:
    def exit_(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(ray_actors.os, "_exit", exit_)
    service = SimpleNamespace(learner=SimpleNamespace(env_steps=999))
    hook = crash_in_checkpoint(service, from_step=1000)
    hook("before_rename")  # step 999: not yet
    service.learner.env_steps = 1000
    hook("after_files")  # another phase: no crash
    with pytest.raises(Exited) as exited:
        hook("before_rename")
    assert exited.value.args == (17,)


def zero_grads() -> list[torch.Tensor]:
    """A run's critic gradients as the hook gets them: weight, then bias."""
    return [torch.zeros(2, 3), torch.zeros(2)]


def test_the_nan_gradient_hook_fires_once_at_its_update() -> None:
    hook, grads = nan_gradient_at(7), zero_grads()
    hook(6, grads)
    assert all(int(g.isnan().sum()) == 0 for g in grads)
    hook(7, grads)
    assert int(grads[0].isnan().sum()) == 6 and int(grads[1].isnan().sum()) == 0  # its first tensor
    grads = zero_grads()
    hook(7, grads)  # update 7 again after a rollback: passes
    assert all(int(g.isnan().sum()) == 0 for g in grads)


def test_poison_fills_the_first_tensor_with_nan_and_leaves_the_input() -> None:
    tensors = {"pi.w": torch.ones(2, 2), "pi.b": torch.ones(2)}
    poisoned = poison(tensors)
    assert list(poisoned) == ["pi.w", "pi.b"]
    assert all(math.isnan(x) for x in poisoned["pi.w"].flatten().tolist())
    assert poisoned["pi.b"] is tensors["pi.b"]
    assert torch.equal(tensors["pi.w"], torch.ones(2, 2))
