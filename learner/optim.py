"""Adam with its learning rate as a device tensor and its state created up front.

The learning rate lives in one 0-d tensor shared by every optimizer of the
learner, so the NaN remedies change it without touching a captured CUDA graph;
the state exists before the first step, so its addresses never change, and a
checkpoint is loaded into it in place. Fused on every device (CUDA and CPU);
capturable on CUDA.
"""

from __future__ import annotations

import torch
from torch import nn


def make_adam(params: list[nn.Parameter], lr: torch.Tensor) -> torch.optim.Adam:
    """Fused Adam over ``params`` with ``lr`` as its learning rate; its state already allocated."""
    capturable = lr.device.type == "cuda"
    optimizer = torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
    for p in params:
        optimizer.state[p] = {
            "step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


def adam_state(optimizer: torch.optim.Adam) -> dict:
    """``{"state": {i: {step, exp_avg, exp_avg_sq}}}`` by parameter index (copies; the lr lives elsewhere)."""
    params = optimizer.param_groups[0]["params"]
    return {"state": {i: {k: v.detach().clone() for k, v in optimizer.state[p].items()} for i, p in enumerate(params)}}


@torch.no_grad()
def load_adam_state(optimizer: torch.optim.Adam, saved: dict) -> None:
    """Copy ``adam_state``'s output into the optimizer's own tensors, in place (a captured graph stays valid).

    A parameter missing from ``saved`` (an optimizer that had not stepped) starts from zero.
    """
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        source = saved["state"].get(i, saved["state"].get(str(i)))
        for name, tensor in optimizer.state[p].items():
            if source is None:
                tensor.zero_()
            else:
                tensor.copy_(source[name])
