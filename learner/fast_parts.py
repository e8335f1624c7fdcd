"""Building blocks of the graphed SAC update (``learner/fast_sac.py``).

- ``StackedTwinCritic``: the two Q networks held as stacked weights ``[2, out, in]``
  and evaluated together (one matmul per layer for both), so one update launches
  half the critic kernels of two separate MLPs.
- ``alias_twin``: a plain ``TwinCritic`` whose parameters share memory with the
  stacked ones, so ``critic.state_dict()`` has the eager ``SAC``'s keys and
  ``load_state_dict`` writes straight into the stacked storage.
- Capturable Adam (fused, learning rate as a device tensor) with its state
  created up front, and conversion of its state to and from the layout the
  eager ``SAC``'s plain Adam uses, so checkpoints interchange.
- The update's maths as pure functions (optionally through ``torch.compile``)
  and the block summary that reproduces the eager accumulation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from learner.losses import soft_q_target
from learner.networks import LOG_STD_MAX, LOG_STD_MIN, TwinCritic, squashed_gaussian_log_prob
from learner.sac import stats_vector

Mapping = list[tuple[int, int | None]]
"""For each parameter index of the eager layout: (index in our optimizer, row of the stack or None)."""


class StackedTwinCritic(nn.Module):
    """Twin MLP critics ``Q(s, a)`` → ``[2, B]``; layer ``l`` holds ``weight[l]: [2, out, in]``."""

    def __init__(self, twin: TwinCritic) -> None:
        super().__init__()
        first = [m for m in twin.q1 if isinstance(m, nn.Linear)]
        second = [m for m in twin.q2 if isinstance(m, nn.Linear)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([a.weight.detach(), b.weight.detach()]))
            for a, b in zip(first, second, strict=True)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([a.bias.detach(), b.bias.detach()])) for a, b in zip(first, second, strict=True)
        )

    def ordered(self) -> list[nn.Parameter]:
        """Parameters in the eager per-network order: weight, bias of each layer."""
        return [p for w, b in zip(self.weights, self.biases, strict=True) for p in (w, b)]

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        xa = torch.cat([x, action], dim=-1)
        w0, b0 = self.weights[0], self.biases[0]
        # First layer: both networks in one [B, in] x [in, 2*out] product.
        h = nn.functional.linear(xa, w0.reshape(-1, w0.shape[-1]), b0.reshape(-1))
        h = h.view(xa.shape[0], 2, w0.shape[1]).transpose(0, 1)
        for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(b.unsqueeze(1), torch.relu(h), w.transpose(1, 2))
        return h.squeeze(-1)


def alias_twin(stacked: StackedTwinCritic, in_dim: int, action_dim: int, hidden: tuple[int, ...]) -> TwinCritic:
    """A ``TwinCritic`` whose Linear parameters are views into ``stacked`` (no copies, no RNG used)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        twin = TwinCritic(in_dim, action_dim, hidden)
    for row, net in enumerate((twin.q1, twin.q2)):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for layer, linear in enumerate(linears):
            linear.weight = nn.Parameter(stacked.weights[layer].data[row], requires_grad=False)
            linear.bias = nn.Parameter(stacked.biases[layer].data[row], requires_grad=False)
    return twin


def critic_mapping(layers: int) -> Mapping:
    """Eager ``TwinCritic.parameters()`` order (q1 weights/biases, then q2) → stacked (index, row)."""
    return [(j, row) for row in (0, 1) for j in range(2 * layers)]


def identity_mapping(count: int) -> Mapping:
    return [(i, None) for i in range(count)]


def make_adam(params: list[nn.Parameter], lr: torch.Tensor) -> torch.optim.Adam:
    """Fused, capturable Adam whose lr is the device tensor ``lr``; its state exists from the start.

    Creating the state now fixes every tensor's address before a graph captures
    them; loading a checkpoint later copies into these tensors in place.
    """
    optimizer = torch.optim.Adam(params, lr=lr, fused=True, capturable=True)
    for p in params:
        optimizer.state[p] = {
            "step": torch.zeros((), dtype=torch.float32, device=p.device),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


def _row(tensor: torch.Tensor, row: int | None) -> torch.Tensor:
    return tensor if row is None else tensor[row]


def export_adam(optimizer: torch.optim.Adam, mapping: Mapping, layout_params: list[nn.Parameter], lr: float) -> dict:
    """Our optimizer's state in the eager ``Adam(layout_params, lr=lr).state_dict()`` layout.

    An optimizer that has not stepped exports an empty state, as a fresh eager Adam does.
    """
    groups = torch.optim.Adam(layout_params, lr=lr).state_dict()["param_groups"]
    params = optimizer.param_groups[0]["params"]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for i, (j, row) in enumerate(mapping):
        own = optimizer.state[params[j]]
        state[i] = {
            "step": own["step"].detach().to("cpu", torch.float32).clone(),
            "exp_avg": _row(own["exp_avg"], row).detach().clone(),
            "exp_avg_sq": _row(own["exp_avg_sq"], row).detach().clone(),
        }
    if all(float(s["step"]) == 0.0 for s in state.values()):
        state = {}
    return {"state": state, "param_groups": groups}


@torch.no_grad()
def import_adam(optimizer: torch.optim.Adam, saved: dict, mapping: Mapping) -> None:
    """Copy an eager-layout Adam state into our optimizer's tensors in place (addresses stay)."""
    params = optimizer.param_groups[0]["params"]
    states = saved["state"]
    for i, (j, row) in enumerate(mapping):
        own = optimizer.state[params[j]]
        source = states.get(i, states.get(str(i)))
        if source is None:
            own["step"].zero_()
            _row(own["exp_avg"], row).zero_()
            _row(own["exp_avg_sq"], row).zero_()
            continue
        own["step"].copy_(source["step"])
        _row(own["exp_avg"], row).copy_(source["exp_avg"])
        _row(own["exp_avg_sq"], row).copy_(source["exp_avg_sq"])


# -- pure maths, shared by the eager and graphed runs (optionally torch.compile'd) ----------------
def policy_head(out: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Actor output ``[N, 2A]`` and noise ``[N, A]`` → tanh action and its log-probability (as ``Actor.sample``)."""
    mean, log_std = out.chunk(2, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    pre_tanh = mean + log_std.exp() * noise
    return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)


def critic_objective(
    q: torch.Tensor,
    scaled_reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Sum of both critics' mean squared errors (``q``, ``next_q``: ``[2, B]``) against the soft target."""
    target = soft_q_target(scaled_reward, terminated, gamma, next_q[0], next_q[1], next_log_prob, alpha)
    return (q - target).pow(2).mean(dim=1).sum()


def policy_objective(alpha: torch.Tensor, log_prob: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (alpha * log_prob - torch.minimum(q[0], q[1])).mean()


def alpha_gradient(log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """d/d(log α) of ``−E[log α · (log π + H)]``: ``−(E[log π] + H)``."""
    return torch.rsub(log_prob.mean(), -target_entropy)


MATH: dict[str, Callable] = {
    "policy_head": policy_head,
    "critic_objective": critic_objective,
    "policy_objective": policy_objective,
    "stats_vector": stats_vector,
}
_COMPILED: dict[str, Callable] = {}


def compiled_math() -> dict[str, Callable]:
    """``MATH`` through ``torch.compile`` (fused elementwise kernels); shared by every instance."""
    if not _COMPILED:
        _COMPILED.update({k: torch.compile(f, dynamic=False, fullgraph=True) for k, f in MATH.items()})
    return _COMPILED
