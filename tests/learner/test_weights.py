"""Versioned policy weights: the checksum, the finiteness check, and the gate every broadcast passes."""

from __future__ import annotations

import hashlib
import struct

import torch

from learner.networks import Actor
from learner.weights import WeightGate, all_finite, make_versioned, weights_checksum

IN_DIM, ACTION_DIM, HIDDEN = 5, 1, (16, 16)


def policy_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {name: t.clone() for name, t in Actor(IN_DIM, ACTION_DIM, HIDDEN).state_dict().items()}


def make_gate() -> WeightGate:
    return WeightGate(policy_tensors(), IN_DIM, ACTION_DIM, HIDDEN)


def test_weight_gate_rejects_nonfinite_shape_and_dtype():
    gate = make_gate()
    good = policy_tensors(seed=1)
    assert gate.check(good).accepted
    name = next(iter(good))
    nan = dict(good, **{name: good[name].clone().fill_(float("nan"))})
    verdict = gate.check(nan)
    assert (verdict.accepted, verdict.reason) == (False, "nonfinite") and name in verdict.detail
    assert gate.check(dict(good, **{name: good[name][:1]})).reason == "shape"
    assert gate.check(dict(good, **{name: good[name].double()})).reason == "dtype"
    # huge but finite weights make a non-finite probe action
    huge = {k: v.clone().fill_(3e38) for k, v in good.items()}
    assert gate.check(huge).reason == "probe"


def test_weight_gate_names_a_missing_or_extra_tensor():
    gate, good = make_gate(), policy_tensors()
    missing = {k: v for k, v in good.items() if k != "net.4.bias"}
    verdict = gate.check(missing)
    assert (verdict.accepted, verdict.reason, verdict.detail) == (False, "shape", "tensor names differ: ['net.4.bias']")
    verdict = gate.check(dict(good, extra=torch.zeros(1)))
    assert (verdict.accepted, verdict.reason, verdict.detail) == (False, "shape", "tensor names differ: ['extra']")


def test_checksum_is_sha256_over_name_shape_dtype_and_bytes_in_name_order():
    one = torch.tensor([1.0])
    expected = hashlib.sha256(b"a|(1,)|torch.float32|" + struct.pack("<f", 1.0)).hexdigest()
    assert weights_checksum({"a": one}) == expected
    tensors = policy_tensors()
    reordered = dict(reversed(list(tensors.items())))
    assert weights_checksum(reordered) == weights_checksum(tensors)


def test_checksum_changes_with_one_bit_a_dtype_or_a_name():
    tensors = policy_tensors()
    base = weights_checksum(tensors)
    flipped = {k: v.clone() for k, v in tensors.items()}
    flipped["net.0.bias"].view(torch.int32)[0] ^= 1  # the lowest mantissa bit of one weight
    assert weights_checksum(flipped) != base
    assert weights_checksum(dict(tensors, **{"net.0.bias": tensors["net.0.bias"].double()})) != base
    renamed = {("x" + k if k == "net.0.bias" else k): v for k, v in tensors.items()}
    assert weights_checksum(renamed) != base


def test_all_finite_checks_floating_tensors_only():
    assert all_finite({}) and all_finite({"count": torch.tensor([3], dtype=torch.int64)})
    assert all_finite({"w": torch.ones(3), "n": torch.tensor(7)})
    assert not all_finite({"w": torch.tensor([1.0, float("inf")])})
    assert not all_finite({"w": torch.ones(2), "b": torch.tensor([float("nan")], dtype=torch.bfloat16)})


def test_make_versioned_holds_cpu_copies_and_their_checksum():
    tensors = policy_tensors()
    weights = make_versioned(7, tensors)
    assert weights.version == 7 and weights.checksum == weights_checksum(tensors)
    before = weights.tensors["net.0.bias"].clone()
    tensors["net.0.bias"].fill_(5.0)  # the trainer moves on
    assert torch.equal(weights.tensors["net.0.bias"], before)
    assert all(t.device.type == "cpu" for t in weights.tensors.values())
