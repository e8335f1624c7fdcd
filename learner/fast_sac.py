"""The SAC update as one CUDA-graph launch: the learner's fast path on a GPU.

``GraphedSAC`` computes what the eager ``SAC`` computes (that class stays the
correctness reference and the CPU path) and has its public interface, with
fewer, larger kernels, recorded once in a CUDA graph and replayed per update:

- twin critics evaluated together (``StackedTwinCritic``: one matmul per layer
  for both), the policy's two forward passes (next and current observations)
  in one batch, the temperature gradient in closed form;
- fused, capturable Adam with the learning rate as one shared device tensor,
  and the reward scale as a device tensor: ``set_learning_rate`` and a changed
  ``reward_scale`` (the NaN remedies) need no re-capture;
- critics, actor, temperature, Polyak targets, guard flags and statistics are
  all inside the graph; ``update_block`` also samples the replay inside it.

Unsupported while captured: ``grad_hook`` (setting one makes updates run
eagerly, with the hook, until it is cleared) and a batch whose size differs
from ``config.batch_size`` (run eagerly). Checkpoints interchange with ``SAC``:
``state_dict`` uses its keys and its optimizers' layout.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

from learner.config import LearnerConfig
from learner.fast_parts import (
    MATH,
    StackedTwinCritic,
    alias_twin,
    alpha_gradient,
    compiled_math,
    critic_mapping,
    export_adam,
    identity_mapping,
    import_adam,
    make_adam,
)
from learner.losses import polyak_update
from learner.networks import Actor, TwinCritic
from learner.replay import ReplayBuffer
from learner.sac import COUNT_FIELDS, SAC, STAT_FIELDS, GradHook, summarize_block
from learner.temperature import FixedTemperature, LearnedTemperature, Temperature

log = logging.getLogger(__name__)

WARMUP_UPDATES = 3
"""Eager updates run on a side stream before a capture (state is restored afterwards)."""
INDEX_RANGE = 2**62
"""Replay indices are ``randint(0, INDEX_RANGE) mod size``: uniform to within 1e-12 for any real size."""


class GraphedTemperature(LearnedTemperature):
    """Learned temperature with a capturable optimizer and the gradient in closed form."""

    def __init__(self, initial_alpha: float, target_entropy: float, lr: torch.Tensor, device: torch.device) -> None:
        super().__init__(initial_alpha, target_entropy, float(lr), device)
        self.optimizer = make_adam([self.log_alpha], lr)

    def update(self, log_prob: torch.Tensor) -> None:
        self.log_alpha.grad = alpha_gradient(log_prob.detach(), self.target_entropy)
        self.optimizer.step()

    def state_dict(self) -> dict:
        lr = float(self.optimizer.param_groups[0]["lr"])
        optimizer = export_adam(self.optimizer, identity_mapping(1), [self.log_alpha], lr)
        return {"log_alpha": self.log_alpha.detach().clone(), "optimizer": optimizer}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        import_adam(self.optimizer, state["optimizer"], identity_mapping(1))


class GraphedSAC:
    """``SAC``'s interface and numbers; on CUDA each update is one graph replay."""

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        config: LearnerConfig,
        device: torch.device,
        seed: int,
        *,
        guard: bool = True,
        use_graph: bool | None = None,
        compile_math: bool = False,
    ) -> None:
        torch.manual_seed(seed)  # same initial networks as SAC(seed)
        self.config, self.device, self.guard, self.action_dim = config, device, guard, action_dim
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        hidden = config.hidden_sizes
        self.actor = Actor(in_dim, action_dim, hidden).to(device)
        self.stacked = StackedTwinCritic(TwinCritic(in_dim, action_dim, hidden)).to(device)
        self.stacked_target = copy.deepcopy(self.stacked).requires_grad_(False)
        self.critic = alias_twin(self.stacked, in_dim, action_dim, hidden)
        self.critic_target = alias_twin(self.stacked_target, in_dim, action_dim, hidden)
        self.lr = torch.tensor(config.lr, dtype=torch.float32, device=device)
        self.actor_optimizer = make_adam(list(self.actor.parameters()), self.lr)
        self.critic_optimizer = make_adam(self.stacked.ordered(), self.lr)
        self.temperature: Temperature = make_graphed_temperature(config, action_dim, self.lr, device)
        self.reward_scale = torch.tensor(config.reward_scale, device=device)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(seed + 1)
        self.keep = torch.tensor([1.0 if f in COUNT_FIELDS else 0.0 for f in STAT_FIELDS], device=device)
        self.grad_hook: GradHook | None = None
        self.updates_done = 0
        self.captures = 0
        """Graph captures so far (a learning-rate or reward-scale change must not add one)."""
        self._math = compiled_math() if compile_math else MATH
        self._batch_graph: tuple[torch.cuda.CUDAGraph, torch.Tensor] | None = None
        self._static: dict[str, torch.Tensor] = {}
        self._replay_graph: torch.cuda.CUDAGraph | None = None
        self._bound: ReplayBuffer | None = None
        self._size = torch.ones((), dtype=torch.long, device=device)
        self._size_seen = -1
        self._counter = torch.zeros(1, dtype=torch.long, device=device)
        self._allocate_block(config.block_updates)

    # -- one update ---------------------------------------------------------------------------
    def _core(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One update from a batch of device tensors; returns the statistics vector."""
        cfg, m = self.config, self._math
        obs_in = torch.cat([batch["obs"], batch["context"]], dim=-1)
        next_in = torch.cat([batch["next_obs"], batch["next_context"]], dim=-1)
        size = obs_in.shape[0]
        alpha = self.temperature.alpha()
        shape = (size, self.action_dim)
        # Drawn in SAC's order (next action first), so both paths see the same noise.
        noise = torch.cat([torch.randn(shape, generator=self.noise, device=self.device) for _ in range(2)])
        actions, log_probs = m["policy_head"](self.actor.net(torch.cat([next_in, obs_in])), noise)
        with torch.no_grad():
            next_q = self.stacked_target(next_in, actions[:size])
            scaled_reward = batch["reward"] * self.reward_scale  # the one place rewards are scaled
        q = self.stacked(obs_in, batch["action"])
        q_loss = m["critic_objective"](
            q, scaled_reward, batch["terminated"], cfg.gamma, next_q, log_probs[:size].detach(), alpha
        )
        q_norm = self._step(self.critic_optimizer, q_loss, critic=True)
        self.stacked.requires_grad_(False)  # the policy loss must not leave gradients on the critics
        policy_q = self.stacked(obs_in, actions[size:])
        self.stacked.requires_grad_(True)
        policy_loss = m["policy_objective"](alpha, log_probs[size:], policy_q)
        policy_norm = self._step(self.actor_optimizer, policy_loss, critic=False)
        self.temperature.update(log_probs[size:])
        polyak_update(self.stacked_target.ordered(), self.stacked.ordered(), cfg.tau)
        return m["stats_vector"](
            q[0].detach(),
            q_loss.detach(),
            policy_loss.detach(),
            q_norm,
            policy_norm,
            alpha,
            cfg.max_grad_norm,
            self.guard,
        )

    def _step(self, optimizer: torch.optim.Adam, loss: torch.Tensor, critic: bool) -> torch.Tensor:
        """Backward, pre-clip global norm, clip, Adam step; returns the pre-clip norm."""
        params = optimizer.param_groups[0]["params"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if critic and self.grad_hook is not None:
            self._expose_critic_grads()
            self.grad_hook(self.updates_done, self.critic)
        norm = nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optimizer.step()
        return norm

    def _expose_critic_grads(self) -> None:
        """Give the aliased ``critic`` parameters views of the stacked gradients (for ``grad_hook``)."""
        aliases = list(self.critic.parameters())
        stacked = self.stacked.ordered()
        for alias, (j, row) in zip(aliases, critic_mapping(len(self.stacked.weights)), strict=True):
            alias.grad = stacked[j].grad[row]

    def _replay_step(self, replay: ReplayBuffer) -> None:
        """Sample a batch on the device, update, and record the statistics and indices at ``counter``."""
        batch_size = self.config.batch_size
        draw = torch.randint(0, INDEX_RANGE, (batch_size,), generator=replay.generator, device=self.device)
        index = draw.remainder_(self._size)
        stats = self._core({name: tensor[index] for name, tensor in replay.storage.items()})
        self._rows.index_copy_(0, self._counter, stats.unsqueeze(0))
        self._indices.index_copy_(0, self._counter, index.unsqueeze(0))
        self._counter.add_(1)

    # -- public update API --------------------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One SAC update on ``batch``; returns the statistics vector (device, no sync)."""
        if self._graphed() and int(batch["reward"].shape[0]) == self.config.batch_size:
            graph, out = self._batch_graph_for(batch)
            for name, buffer in self._static.items():
                buffer.copy_(batch[name])
            graph.replay()
            stats = out.clone()
        else:
            stats = self._core(batch)
        self.updates_done += 1
        return stats

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` updates on batches sampled from ``replay`` on the device; no host sync.

        Returns ``(vector, indices)``: ``vector`` is the block's accumulated
        statistics (``STAT_FIELDS`` layout, as ``Learner.update_block`` sums
        them) followed by the index of the first update whose guard flags fired
        (-1: none); ``indices`` ``[count, batch]`` are the replay rows each update used.
        """
        if len(replay) == 0:
            raise ValueError("update_block needs a non-empty replay buffer")
        if count > self._rows.shape[0]:
            self._allocate_block(count)
        if len(replay) != self._size_seen:
            self._size.fill_(len(replay))
            self._size_seen = len(replay)
        graph = self._replay_graph_for(replay) if self._graphed() else None
        self._counter.zero_()
        for _ in range(count):
            if graph is None:
                self._replay_step(replay)
            else:
                graph.replay()
        self.updates_done += count
        keep = self.keep.bool()
        return summarize_block(self._rows[:count], keep), self._indices[:count].clone()

    # -- capture ------------------------------------------------------------------------------
    def _graphed(self) -> bool:
        return self.use_graph and self.grad_hook is None

    def _allocate_block(self, capacity: int) -> None:
        self._rows = torch.zeros((capacity, len(STAT_FIELDS)), device=self.device)
        self._indices = torch.zeros((capacity, self.config.batch_size), dtype=torch.long, device=self.device)
        self._replay_graph = None  # it wrote into the old buffers

    def _batch_graph_for(self, batch: dict[str, torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        if self._batch_graph is None:
            self._static = {name: tensor.detach().to(self.device).clone() for name, tensor in batch.items()}
            self._batch_graph = self._capture(lambda: self._core(self._static), [self.noise])
        return self._batch_graph

    def _replay_graph_for(self, replay: ReplayBuffer) -> torch.cuda.CUDAGraph:
        if self._replay_graph is None or self._bound is not replay:
            self._bound = replay
            self._replay_graph, _ = self._capture(lambda: self._replay_step(replay), [self.noise, replay.generator])
        return self._replay_graph

    def _capture(
        self, step: Callable[[], object], generators: list[torch.Generator]
    ) -> tuple[torch.cuda.CUDAGraph, object]:
        """Warm up on a side stream, capture ``step`` once, then put every state tensor and RNG back."""
        saved = self.device_snapshot()
        generator_states = [g.get_state() for g in generators]
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._warm_up(step, saved)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        for optimizer in self._optimizers():
            optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
        with torch.cuda.graph(graph):
            out = step()
        self.restore_device_snapshot(saved)
        for generator, state in zip(generators, generator_states, strict=True):
            generator.set_state(state)
        self.captures += 1
        return graph, out

    def _warm_up(self, step: Callable[[], object], saved: dict) -> None:
        """Run ``step`` a few times; if the compiled maths fail to build, fall back to the plain ones."""
        try:
            for _ in range(WARMUP_UPDATES):
                step()
            return
        except Exception as error:
            if self._math is MATH:
                raise
            log.warning("torch.compile of the update maths failed, capturing them uncompiled: %s", error)
        # Retried outside the handler, so the failed attempt's autograd graph is already freed.
        self._math = MATH
        self.restore_device_snapshot(saved)
        for _ in range(WARMUP_UPDATES):
            step()

    # -- state --------------------------------------------------------------------------------
    def _optimizers(self) -> list[torch.optim.Adam]:
        optimizers = [self.actor_optimizer, self.critic_optimizer]
        if isinstance(self.temperature, GraphedTemperature):
            optimizers.append(self.temperature.optimizer)
        return optimizers

    def _state_tensors(self) -> list[torch.Tensor]:
        """Every tensor an update changes in place (parameters, targets, optimizer moments and steps)."""
        tensors = [p.data for p in self.actor.parameters()] + [p.data for p in self.stacked.ordered()]
        tensors += [p.data for p in self.stacked_target.ordered()]
        for optimizer in self._optimizers():
            for p in optimizer.param_groups[0]["params"]:
                tensors += list(optimizer.state[p].values())
        if isinstance(self.temperature, GraphedTemperature):
            tensors.append(self.temperature.log_alpha.data)
        return tensors

    def device_snapshot(self) -> dict:
        """A device copy of all mutable state and the noise RNG (no host sync); for fast rollback."""
        return {
            "tensors": [t.clone() for t in self._state_tensors()],
            "noise_rng": self.noise.get_state(),
            "updates_done": self.updates_done,
        }

    @torch.no_grad()
    def restore_device_snapshot(self, snapshot: dict) -> None:
        for tensor, saved in zip(self._state_tensors(), snapshot["tensors"], strict=True):
            tensor.copy_(saved)
        self.noise.set_state(snapshot["noise_rng"])
        self.updates_done = snapshot["updates_done"]

    def set_learning_rate(self, lr: float) -> None:
        self.lr.fill_(lr)  # every optimizer holds this tensor: no re-capture

    def learning_rate(self) -> float:
        return float(self.lr)

    def state_dict(self) -> dict:
        """As ``SAC.state_dict`` (same keys, eager-Adam layout), so checkpoints interchange."""
        lr = self.learning_rate()
        layers = len(self.stacked.weights)
        actor_params = list(self.actor.parameters())
        return {
            "actor": self.actor.state_dict(),
            "critic": {k: v.clone() for k, v in self.critic.state_dict().items()},
            "critic_target": {k: v.clone() for k, v in self.critic_target.state_dict().items()},
            "actor_optimizer": export_adam(self.actor_optimizer, identity_mapping(len(actor_params)), actor_params, lr),
            "critic_optimizer": export_adam(
                self.critic_optimizer, critic_mapping(layers), list(self.critic.parameters()), lr
            ),
            "temperature": self.temperature.state_dict(),
            "reward_scale": float(self.reward_scale),
            "learning_rate": lr,
            "noise_rng": self.noise.get_state(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a ``SAC`` or ``GraphedSAC`` state in place: captured graphs stay valid."""
        layers = len(self.stacked.weights)
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        import_adam(
            self.actor_optimizer, state["actor_optimizer"], identity_mapping(len(list(self.actor.parameters())))
        )
        import_adam(self.critic_optimizer, state["critic_optimizer"], critic_mapping(layers))
        self.temperature.load_state_dict(state["temperature"])
        self.reward_scale.fill_(state["reward_scale"])
        self.set_learning_rate(state["learning_rate"])
        self.noise.set_state(state["noise_rng"])
        self.updates_done = int(state["updates_done"])


def make_graphed_temperature(
    config: LearnerConfig, action_dim: int, lr: torch.Tensor, device: torch.device
) -> Temperature:
    if config.temperature == "fixed":
        return FixedTemperature(config.initial_alpha, device)
    return GraphedTemperature(config.initial_alpha, -config.target_entropy_scale * action_dim, lr, device)


def build_sac(in_dim: int, action_dim: int, config: LearnerConfig, device: torch.device, seed: int) -> SAC | GraphedSAC:
    """The update for this device, by ``config.fast_path``: on CUDA ``auto`` → ``GraphedSAC`` with compiled
    maths, ``graph`` → ``GraphedSAC`` without ``torch.compile``; ``off`` and every other device → eager ``SAC``."""
    mode = getattr(config, "fast_path", "auto")
    if device.type == "cuda" and mode != "off":
        return GraphedSAC(in_dim, action_dim, config, device, seed, compile_math=mode == "auto")
    return SAC(in_dim, action_dim, config, device, seed)
