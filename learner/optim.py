"""Adam with its learning rate as a device tensor and its state created up front, and the clipped step SAC takes.

The learning rate lives in one 0-d tensor shared by every optimizer of the
learner, so the NaN remedies change it without touching a captured CUDA graph;
the state exists before the first step, so its addresses never change, and a
checkpoint is loaded into it in place. SAC steps through ``clipped_adam_step``, a
pure function of tensor lists (torch's own clipping and functional Adam), which
``learner/graph.py`` compiles: on CUDA its foreach form fuses into a few kernels
spread over the whole GPU (the fused Adam kernel, which compiling leaves as it is,
gave every parameter chunk of 64k values one thread block: 14 % of an update's GPU
time at batch 256). One compiled step serves every optimizer of the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.adam import adam

BETAS, EPS = (0.9, 0.999), 1e-8
"""Adam's hyperparameters (torch's defaults), for the optimizers and the step alike."""


def make_adam(params: list[nn.Parameter], lr: torch.Tensor) -> torch.optim.Adam:
    """Adam over ``params`` with ``lr`` as its learning rate and its state already allocated: the state's home and
    the checkpoint's layout. SAC steps these tensors through ``clipped_adam_step`` / ``adam_step``, not ``step()``."""
    capturable = lr.device.type == "cuda"
    optimizer = torch.optim.Adam(params, lr=lr, betas=BETAS, eps=EPS, fused=True, capturable=capturable)
    for p in params:
        optimizer.state[p] = {
            "step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


@dataclass(frozen=True)
class AdamTensors:
    """An optimizer's parameters and state as the lists ``clipped_adam_step`` takes (the same tensors, not copies)."""

    params: list[nn.Parameter]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    steps: list[torch.Tensor]
    lr: torch.Tensor

    @staticmethod
    def of(optimizer: torch.optim.Adam) -> AdamTensors:
        group = optimizer.param_groups[0]
        params = list(group["params"])
        states = [optimizer.state[p] for p in params]
        return AdamTensors(params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                           [s["step"] for s in states], group["lr"])  # fmt: skip


def clipped_adam_step(
    params: list[nn.Parameter], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor], lr: torch.Tensor, max_norm: float,
) -> torch.Tensor:  # fmt: skip
    """Clip ``grads`` (the parameters' ``.grad``) to global norm ``max_norm``, then one Adam step (``BETAS``, ``EPS``);
    returns the pre-clip norm. A non-finite norm leaves non-finite parameters (the guard
    rolls them back). Foreach and capturable on CUDA (what ``torch.compile`` fuses), fused on the CPU."""
    norm = nn.utils.get_total_norm(grads, foreach=True)
    nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr)
    return norm


@torch.no_grad()
def adam_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor], lr: torch.Tensor,
) -> None:  # fmt: skip
    """One step of torch's functional Adam (``BETAS``, ``EPS``): foreach and capturable on CUDA, fused on the CPU."""
    cuda = lr.device.type == "cuda"
    adam(
        params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=cuda, fused=not cuda, capturable=cuda,
        amsgrad=False, beta1=BETAS[0], beta2=BETAS[1], lr=lr, weight_decay=0.0, eps=EPS, maximize=False,
    )  # fmt: skip


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
