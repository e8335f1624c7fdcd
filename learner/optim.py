"""Adam for ``K`` runs side by side, with per-run learning rates as a device tensor, and the clipped step SAC takes.

Every parameter is stacked on a leading run dimension ``[K, ...]`` and so are its moments; each optimizer counts
its steps in a ``[K]`` tensor and reads its learning rates from the runs' ``lr`` ``[K]``, so the NaN remedies change
a run's rate without touching a captured CUDA graph, and the state exists before the first step (its addresses never
change; a checkpoint is loaded into it in place). Clipping is per run: each run's gradients to its own global norm.
Written with foreach ops, which ``torch.compile`` (``learner/graph.py``) fuses into a few kernels for all runs and
parameters. A run's state is saved and loaded in ``torch.optim.Adam``'s layout (by parameter index).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BETAS, EPS = (0.9, 0.999), 1e-8
"""Adam's hyperparameters (torch's defaults)."""


@dataclass(frozen=True)
class AdamTensors:
    """One optimizer of ``K`` runs: its parameters ``[K, ...]``, their moments, and its step count ``[K]``."""

    params: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    step: torch.Tensor

    @staticmethod
    def zeros_for(params: list[torch.Tensor]) -> AdamTensors:
        runs = params[0].shape[0]
        return AdamTensors(list(params), [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params],
                           torch.zeros(runs, device=params[0].device))  # fmt: skip

    def tensors(self) -> list[torch.Tensor]:
        """The state an update changes (moments and step; the parameters belong to their owner)."""
        return [*self.exp_avgs, *self.exp_avg_sqs, self.step]

    def run(self, k: int) -> AdamTensors:
        """Run ``k``'s state as views (a step of ``[]``)."""
        return AdamTensors([p[k] for p in self.params], [m[k] for m in self.exp_avgs],
                           [v[k] for v in self.exp_avg_sqs], self.step[k])  # fmt: skip


def per_run(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` ``[K]`` as ``[K, 1, ...]``, to broadcast over ``like`` ``[K, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def clipped_adam_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    step: torch.Tensor, lr: torch.Tensor, max_norm: float,
) -> torch.Tensor:  # fmt: skip
    """Clip each run's ``grads`` (``[K, ...]``, the parameters' ``.grad``) to its global norm ``max_norm``, in place as
    ``clip_grad_norm_`` does, then one Adam step; returns the pre-clip norms ``[K]``. A non-finite norm leaves that
    run's parameters non-finite (the guard rolls them back), and only that run's."""
    # One reduction per run over all its gradients, joined (on CUDA torch.compile reads them in place, no joined
    # copy: the join's user is pointwise): a norm per tensor, then of those, was 13 kernels per update for one run and
    # 19 for 8 on an H200 (Inductor splits 8 rows otherwise than one); a foreach norm of the K x P slices, 90 at 8.
    norm = torch.cat([g.flatten(1) for g in grads], dim=1).square().sum(dim=1).sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # clip_grads_with_norm_'s formula, per run
    torch._foreach_mul_(grads, [per_run(scale, g) for g in grads])
    adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr)
    return norm


@torch.no_grad()
def adam_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    step: torch.Tensor, lr: torch.Tensor,
) -> None:  # fmt: skip
    """One Adam step (``BETAS``, ``EPS``, bias-corrected) of ``K`` runs, run ``k`` at learning rate ``lr[k]``."""
    beta1, beta2 = BETAS
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    step.add_(1)
    step_size = lr / (1 - beta1**step)
    correction = (1 - beta2**step).sqrt()
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, [per_run(correction, v) for v in exp_avg_sqs])
    torch._foreach_add_(denominators, EPS)
    moves = torch._foreach_div(exp_avgs, denominators)
    torch._foreach_mul_(moves, [per_run(step_size, m) for m in moves])
    torch._foreach_sub_(params, moves)


def adam_state(run: AdamTensors) -> dict:
    """One run's state (``AdamTensors.run``) as ``{"state": {i: {step, exp_avg, exp_avg_sq}}}`` by parameter index,
    ``torch.optim.Adam``'s layout (copies; the lr lives elsewhere)."""
    return {"state": {i: {"step": run.step.detach().clone(), "exp_avg": m.detach().clone(),
                          "exp_avg_sq": v.detach().clone()}
                      for i, (m, v) in enumerate(zip(run.exp_avgs, run.exp_avg_sqs, strict=True))}}  # fmt: skip


@torch.no_grad()
def load_adam_state(run: AdamTensors, saved: dict) -> None:
    """Copy ``adam_state``'s output into one run's tensors, in place (a captured graph stays valid). A parameter
    missing from ``saved`` (an optimizer that had not stepped) starts from zero; the step is the first saved one."""
    sources = [saved["state"].get(i, saved["state"].get(str(i))) for i in range(len(run.exp_avgs))]
    for source, m, v in zip(sources, run.exp_avgs, run.exp_avg_sqs, strict=True):
        if source is None:
            m.zero_()
            v.zero_()
        else:
            m.copy_(source["exp_avg"])
            v.copy_(source["exp_avg_sq"])
    steps = [source["step"] for source in sources if source is not None]
    run.step.fill_(torch.as_tensor(steps[0]).reshape(()) if steps else 0)
