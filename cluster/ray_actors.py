"""Ray shells around the in-process objects: the rollout actor and the learner actor.

They hold no logic of their own: the worker, the learner service, the
checkpointer and the metrics exporter are the same objects the local mode uses.
"""

from __future__ import annotations

import logging
import os
import secrets
import warnings
from dataclasses import dataclass

import ray
import torch

from cluster.config import Config, run_configs
from cluster.factory import make_learner_service, make_worker
from learner.parallel import JointTrainer, may_train_alone, time_to_train
from learner.service import Progress, StepReport
from learner.types import Fragment, VersionedWeights


@dataclass(frozen=True)
class FragmentHeader:
    """The small half of a rollout result: what the driver reads; the fragment itself goes to the learner."""

    actor_id: int
    incarnation: int
    seq: int
    env_steps: int
    weights_version: int
    episodes: int


@dataclass(frozen=True)
class TestHooks:
    """Fault injection for tests only (never set from a config file)."""

    __test__ = False  # not a pytest test class

    poison_weights_from_version: int = -1
    """From this weights version on, put a NaN into every exported policy: the gate must refuse them."""
    nan_grad_at_update: int = -1
    """Write NaN into a critic gradient at this update number."""
    crash_writing_checkpoint_from_step: int = -1
    """The first learner's process dies (``os._exit``) inside the first checkpoint write from this env step on,
    after the files and before the rename: the checkpoint stays a temporary directory."""


@ray.remote
class RolloutActor:
    """One rollout worker; every start (Ray's restarts included) is a new incarnation, a restart also a new seed."""

    def __init__(self, config: Config, actor_id: int, seed_stream: int) -> None:
        torch.set_num_threads(1)  # an actor is one CPU; many share a node
        logging.basicConfig(level=logging.INFO)
        with warnings.catch_warnings():  # Ray 2.60 reads its own deprecated actor_id inside this property
            warnings.simplefilter("ignore", DeprecationWarning)
            reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        if reconstructed:  # Ray passes the first start's arguments again: new episodes, not a replay of them
            seed_stream = secrets.randbits(31)
        self.worker = make_worker(config, actor_id=actor_id, seed_stream=seed_stream)

    def rollout(self, steps: int, random_actions: bool, weights: list) -> tuple[FragmentHeader, Fragment]:
        """Swap to the newest weights (passed by reference) if newer, then collect one fragment."""
        version, refs = weights
        if version > self.worker.weights_version:
            self.worker.set_weights(ray.get(refs[0]))
        fragment = self.worker.rollout(steps, random_actions)
        header = FragmentHeader(
            fragment.actor_id, fragment.incarnation, fragment.seq, fragment.env_steps, fragment.weights_version,
            len(fragment.episodes),
        )  # fmt: skip
        return header, fragment

    def health(self) -> dict:
        return {
            "incarnation": self.worker.incarnation,
            "weights_version": self.worker.weights_version,
            "policy_finite": self.worker.policy.parameters_finite(),
        }


@ray.remote(concurrency_groups={"control": 1})
class LearnerActor:
    """The learner services of the job's runs (one, or ``train.parallel_runs``) on one device (the GPU when it was
    given one); serves their metrics.

    Its steps run one at a time; ``request_stop`` runs in a concurrency group of its own,
    so a stop reaches the services while a step is still training. Several runs train in lockstep blocks
    (``learner.parallel.JointTrainer``): a run's step ingests and trains once every run still collecting owes
    updates, or one owes more than two fragments' worth (a slow fleet does not hold the others back long);
    the weights a run earns in another run's step go out with its own next step.
    """

    def __init__(
        self, config: Config, resume: str | None, hooks: TestHooks, restarts: int = 0,
        weights_floor: list[int] | None = None, require_checkpoint: list[bool] | None = None,
    ) -> None:  # fmt: skip
        """``restarts``: learners of this job that died before this one; per run, ``weights_floor``: the newest
        version its actors hold (this learner's first is newer), ``require_checkpoint``: it had a checkpoint, which
        this replacement must find."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        configs = run_configs(config)
        floors, requires = weights_floor or [0] * len(configs), require_checkpoint or [False] * len(configs)
        # The scrape targets name this node: on a multi-node cluster the learner is not on the head.
        node_ip = ray.util.get_node_ip_address()
        self.services = [
            make_learner_service(c, resume, node_ip=node_ip, require_checkpoint=require)
            for c, require in zip(configs, requires, strict=True)
        ]
        self.service = self.services[0]  # the test hooks act on the first run
        self.budgets = [c.train.total_env_steps for c in configs]
        self.patience = [2 * c.rollout.steps_per_fragment * c.env.num_envs * c.train.update_to_data for c in configs]
        self.trainer = JointTrainer(self.services)
        self.earned: dict[int, VersionedWeights] = {}
        """Weights a run earned in another run's step, for its own next report."""
        if restarts or any(floors):
            for service, floor in zip(self.services, floors, strict=True):
                service.continue_after_restart(restarts, floor)
        elif hooks.crash_writing_checkpoint_from_step >= 0:
            self.service.checkpointer.fault_hook = crash_in_checkpoint(self.service, hooks.crash_writing_checkpoint_from_step)
        if hooks.nan_grad_at_update >= 0:
            self.service.learner.sac.grad_hook = nan_gradient_at(hooks.nan_grad_at_update)
        if hooks.poison_weights_from_version >= 0:
            learner = self.service.learner
            learner.export_hook = lambda t: (
                poison(t) if learner.weights_version >= hooks.poison_weights_from_version else t
            )

    def device(self) -> str:
        return str(self.service.learner.device)

    def node(self) -> str:
        """Where this learner runs: node address and process id (logs, and tests that kill it)."""
        return f"{ray.util.get_node_ip_address()} pid {os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def initial_weights(self) -> list[VersionedWeights | None]:
        """Each run's policy (fresh or resumed) as the first version its actors load."""
        return [service.broadcast() for service in self.services]

    def step(self, fragment: Fragment, run: int = 0) -> StepReport:
        """Ingest run ``run``'s fragment, train when it is time, report (checkpointing when due)."""
        service = self.services[run]
        accepted = service.begin_step(fragment)
        owed = [service.updates_due() for service in self.services]
        collecting = [s.learner.env_steps < budget for s, budget in zip(self.services, self.budgets, strict=True)]
        if not service.stopping and time_to_train(owed, collecting, self.patience):
            for k, weights in enumerate(self.trainer.train(may_train_alone(owed, collecting, self.patience))):
                if weights is not None:
                    self.earned[k] = weights
        return service.end_step(self.earned.pop(run, None), accepted)

    @ray.method(concurrency_group="control")
    def request_stop(self) -> None:
        """No further block of updates: the step in progress finishes its block, queued steps only ingest."""
        for service in self.services:
            service.request_stop()

    def report_fleet(self, alive: int, new_restarts: int, run: int = 0) -> None:
        self.services[run].report_fleet(alive, new_restarts)

    def checkpoint(self, announce: bool = True) -> list[str | None]:
        """A checkpoint of every run (its path, or None where refused)."""
        paths = [service.checkpoint(announce) for service in self.services]
        return [str(path) if path else None for path in paths]

    def progress(self) -> list[Progress]:
        return [service.progress() for service in self.services]


def crash_in_checkpoint(service, from_step: int):
    def hook(phase: str) -> None:
        if phase == "before_rename" and service.learner.env_steps >= from_step:
            os._exit(17)

    return hook


def nan_gradient_at(update: int):
    """A one-shot hook: after a rollback the same update number comes round again and must pass."""
    fired: list[int] = []

    def hook(n: int, grads: list[torch.Tensor]) -> None:
        if n == update and not fired:
            fired.append(n)
            grads[0].fill_(float("nan"))

    return hook


def poison(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    name = next(iter(tensors))
    return {**tensors, name: torch.full_like(tensors[name], float("nan"))}
