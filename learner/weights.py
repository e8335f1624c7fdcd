"""Versioned policy weights and the gate every broadcast passes through."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from learner.networks import Actor
from learner.types import VersionedWeights

WEIGHT_REJECT_REASONS = ("nonfinite", "shape", "dtype", "probe")
"""Why the gate refused a broadcast (bounded label values)."""


def weights_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """True when every floating tensor is finite (one reduction per tensor, one host read)."""
    flags = [torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


@dataclass(frozen=True)
class GateVerdict:
    accepted: bool
    reason: str = ""
    detail: str = ""


class WeightGate:
    """Refuses policy weights that are non-finite, malformed, or give a non-finite probe action.

    ``template`` fixes the names, shapes and dtypes the actors expect; the probe
    is a forward pass of a CPU policy on fixed inputs.
    """

    def __init__(self, template: dict[str, torch.Tensor], in_dim: int, action_dim: int, hidden: tuple[int, ...]):
        self.expected = {name: (tuple(t.shape), t.dtype) for name, t in template.items()}
        self.probe_policy = Actor(in_dim, action_dim, hidden)
        generator = torch.Generator().manual_seed(1234)
        self.probe_inputs = torch.randn(16, in_dim, generator=generator) * 3.0

    def check(self, tensors: dict[str, torch.Tensor]) -> GateVerdict:
        if set(tensors) != set(self.expected):
            missing = sorted(set(self.expected) ^ set(tensors))
            return GateVerdict(False, "shape", f"tensor names differ: {missing[:3]}")
        for name, tensor in tensors.items():
            shape, dtype = self.expected[name]
            if tuple(tensor.shape) != shape:
                return GateVerdict(False, "shape", f"{name}: {tuple(tensor.shape)} != {shape}")
            if tensor.dtype != dtype:
                return GateVerdict(False, "dtype", f"{name}: {tensor.dtype} != {dtype}")
        if not all_finite(tensors):
            bad = next(n for n, t in tensors.items() if not torch.isfinite(t).all())
            return GateVerdict(False, "nonfinite", f"{bad} holds NaN or Inf")
        self.probe_policy.load_state_dict(tensors)
        with torch.inference_mode():
            mean, log_std = self.probe_policy(self.probe_inputs)
        if not (torch.isfinite(mean).all() and torch.isfinite(log_std).all()):
            return GateVerdict(False, "probe", "probe forward pass gave a non-finite action")
        return GateVerdict(True)


def make_versioned(version: int, tensors: dict[str, torch.Tensor]) -> VersionedWeights:
    cpu = {name: t.detach().cpu().clone() for name, t in tensors.items()}
    return VersionedWeights(version=version, tensors=cpu, checksum=weights_checksum(cpu))
