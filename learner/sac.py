"""One SAC run: its networks, noise generator, rates and update count, and its checkpoint; its update is its
``RunStack``'s (``learner/stack.py``: the one definition of the step), alone or joined with other runs'.

The networks (``actor``, ``critic``, ``critic_target``) are views of the stack's tensors, for inference, the weights
the actors get and the checkpoint's layout; they hold no gradient.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from learner.checkpoint_io import SAC_LAYOUT as LAYOUT
from learner.config import LearnerConfig
from learner.networks import Actor, TwinCritic
from learner.optim import AdamTensors, adam_state, load_adam_state
from learner.replay import ReplayBuffer
from learner.stack import GradHook, RunStack, StackSpec, copies_of, unpadded, update_blocks


class SAC:
    """One run's networks, targets, optimizers and temperature, on one device, and its update (a ``RunStack`` of
    one, or its slice of a joint stack after ``RunStack.join``)."""

    def __init__(
        self, in_dim: int, action_dim: int, config: LearnerConfig, device: torch.device, seed: int, guard: bool = True,
        critic_in: int | None = None,
    ) -> None:  # fmt: skip
        """``in_dim``: the policy's input, the leading values of ``[obs ‖ context]``; ``critic_in`` (default the
        same): the critics' input, all of it (a context part for the critics only comes last)."""
        torch.manual_seed(seed)
        self.config, self.device, self.guard, self.action_dim = config, device, guard, action_dim
        self.policy_in = in_dim
        self.actor = Actor(in_dim, action_dim, config.hidden_sizes).to(device).requires_grad_(False)
        self.critic = TwinCritic(critic_in or in_dim, action_dim, config.hidden_sizes).to(device).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed + 1)
        self.grad_hook: GradHook | None = None
        self.updates_done = 0
        self.rates_in_force = (config.reward_scale, config.lr)
        """``(reward_scale, lr)`` as given: the device tensors hold them rounded to float32."""
        self.stack = RunStack([self], StackSpec.of(config, in_dim, critic_in or in_dim, action_dim, device, guard))
        with torch.no_grad():
            for name, params in self.networks().items():
                for mine, theirs in zip(self.views(name, getattr(self.stack, name)), params, strict=True):
                    mine.copy_(theirs)
        self.stack.temperature.set_alpha(config.initial_alpha)
        self.set_rates(config.reward_scale, config.lr)
        self.alias_modules()

    def networks(self) -> dict[str, list[nn.Parameter]]:
        """The networks' parameters by the stack's names (``actor``, ``critic``, ``target``), each in the stack's
        order: layer by layer, weight then bias."""
        linears = [m for m in self.actor.net if isinstance(m, nn.Linear)]
        actor = [p for layer in linears for p in (layer.weight, layer.bias)]
        return {"actor": actor, "critic": self.critic.ordered(), "target": self.critic_target.ordered()}

    def views(self, name: str, stacked: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """This run's slices of ``stacked`` — ``[K, ...]`` tensors in network ``name``'s order (``networks``): its
        stacked parameters, their gradients or Adam moments — detached, in the network's shapes (without the first
        layers' alignment columns, ``learner.stack.ALIGNED_WIDTH``); None stays None."""
        return [None if t is None else unpadded(t.detach()[0], p.shape)
                for t, p in zip(stacked, self.networks()[name], strict=True)]  # fmt: skip

    def alias_modules(self) -> None:
        """Point the networks' parameters at this run's slice of the stack (again after a join)."""
        for name, params in self.networks().items():
            for param, view in zip(params, self.views(name, getattr(self.stack, name)), strict=True):
                param.data = view

    def adam(self, name: str) -> AdamTensors:
        """This run's ``actor`` or ``critic`` optimizer state as views in the networks' shapes."""
        adam = getattr(self.stack, f"{name}_adam")
        return AdamTensors(self.views(name, adam.params), self.views(name, adam.exp_avgs),
                           self.views(name, adam.exp_avg_sqs), adam.step[0])  # fmt: skip

    @property
    def lr(self) -> torch.Tensor:
        return self.stack.lr[0]

    @property
    def reward_scale(self) -> torch.Tensor:
        return self.stack.reward_scale[0]

    def alpha(self) -> torch.Tensor:
        """The entropy temperature in force (a device tensor)."""
        return self.stack.temperature.alpha()[0]

    def gradients(self) -> dict[str, list[torch.Tensor]]:
        """The last update's gradients after clipping, ``actor`` and ``critic``, in the stack's order (None before
        the first)."""
        return {name: self.views(name, [p.grad for p in getattr(self.stack, name)]) for name in ("actor", "critic")}

    # -- one update ---------------------------------------------------------------------------
    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """One SAC update on a batch of transitions, the replay's rows (``transition_rows``) on the device; returns
        the statistics vector (no host sync)."""
        return self.stack.step(rows.unsqueeze(0))[0]

    def update(self, rows: torch.Tensor) -> torch.Tensor:
        """One update on the transitions ``rows`` (counted); the statistics vector."""
        stats = self.step(rows)
        self.updates_done += 1
        return stats

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` updates on batches sampled on the device; no host sync. Returns the block's statistics ‖ the
        index of the first flagged update (-1: none), and the replay rows ``[count, batch]`` each update used."""
        return update_blocks([self.stack], [[replay]], count)[0]

    # -- rates ----------------------------------------------------------------------------------
    def set_rates(self, reward_scale: float, lr: float) -> None:
        """Device tensors filled in place (the stack's): captured graphs stay valid."""
        self.reward_scale.fill_(reward_scale)
        self.lr.fill_(lr)
        self.rates_in_force = (float(reward_scale), float(lr))

    # -- snapshots and checkpoints ----------------------------------------------------------------
    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes in place (parameters, targets, temperature, optimizer moments and steps)."""
        return self.stack.state_tensors()

    def device_snapshot(self) -> dict:
        """A device copy of all mutable state and the noise RNG (no host sync), for rolling a bad block back."""
        return {"tensors": copies_of(self.state_tensors()), "noise_rng": self.noise.get_state(),
                "updates_done": self.updates_done}  # fmt: skip

    @torch.no_grad()
    def restore_device_snapshot(self, snapshot: dict) -> None:
        """In place: captured graphs stay valid."""
        torch._foreach_copy_(self.state_tensors(), snapshot["tensors"])
        self.noise.set_state(snapshot["noise_rng"])
        self.updates_done = snapshot["updates_done"]

    def state_dict(self) -> dict:
        """Copies (the networks are views of the stack: saved as they are, they would carry all of it)."""

        def copied(module: nn.Module) -> dict:
            return {name: t.detach().clone() for name, t in module.state_dict().items()}

        return {
            "layout": LAYOUT,
            "actor": copied(self.actor),
            "critic": copied(self.critic),
            "critic_target": copied(self.critic_target),
            "actor_optimizer": adam_state(self.adam("actor")),
            "critic_optimizer": adam_state(self.adam("critic")),
            "temperature": self.stack.temperature.state_dict(),
            "reward_scale": self.rates_in_force[0],
            "learning_rate": self.rates_in_force[1],
            "noise_rng": self.noise.get_state(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a layout-2 state in place (captured graphs stay valid); ``checkpoint_read.upgrade_sac_state``
        converts older ones."""
        if state.get("layout") != LAYOUT:
            raise ValueError(f"SAC state layout {state.get('layout', 1)}: upgrade it with upgrade_sac_state first")
        for module in ("actor", "critic", "critic_target"):  # copies into the existing tensors
            getattr(self, module).load_state_dict(state[module])
        load_adam_state(self.adam("actor"), state["actor_optimizer"])
        load_adam_state(self.adam("critic"), state["critic_optimizer"])
        self.stack.temperature.load_state_dict(state["temperature"])
        self.set_rates(state["reward_scale"], state["learning_rate"])
        self.noise.set_state(state["noise_rng"])
        self.updates_done = int(state["updates_done"])
