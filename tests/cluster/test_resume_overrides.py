"""Resuming and re-running in one process: values in force, explicit overrides, the metrics port."""

from __future__ import annotations

import pytest
import torch

from cluster.config import load_config
from cluster.factory import make_learner_service, make_worker
from tests.conftest import ROOT


def smoke(tmp_path, *extra: str):
    sets = ["cluster.mode=local", f"train.run_dir={tmp_path}", "metrics.enabled=false", *extra]
    return load_config(ROOT / "configs" / "smoke.yaml", sets)


def remedied_checkpoint(tmp_path) -> None:
    """A run whose NaN remedies cut reward scale and learning rate to a tenth, then checkpointed."""
    config = smoke(tmp_path)
    service = make_learner_service(config, serve_metrics=False)
    service.ingest(make_worker(config).rollout(20, random_actions=True))
    service.learner.set_rates(config.learner.reward_scale * 0.1, config.learner.lr * 0.1)
    assert service.checkpoint() == tmp_path / "checkpoints" / "step_000000040"  # 20 steps x 2 envs


def test_resume_keeps_the_values_in_force(tmp_path):
    remedied_checkpoint(tmp_path)
    config = smoke(tmp_path)
    sac = make_learner_service(config, resume="auto", serve_metrics=False).learner.sac
    assert sac.rates_in_force == (config.learner.reward_scale * 0.1, config.learner.lr * 0.1)


def test_explicit_new_values_win_over_the_checkpoint(tmp_path):
    remedied_checkpoint(tmp_path)
    config = smoke(tmp_path, "learner.reward_scale=0.0005", "learner.lr=1e-5")
    service = make_learner_service(config, resume="auto", serve_metrics=False)
    assert service.learner.rates() == (0.0005, 1e-5)
    assert service.learner.env_steps == 20 * config.env.num_envs  # and the rest of the state was resumed


def test_a_finished_local_run_frees_its_metrics_port(tmp_path):
    import socket

    from cluster.local import run_local
    from tests.conftest import free_port

    port = free_port()
    config = load_config(
        ROOT / "configs" / "smoke.yaml",
        ["cluster.mode=local", f"train.run_dir={tmp_path}", f"metrics.port={port}", "train.total_env_steps=300"],
    )
    assert run_local(config)["env_steps"] == 300
    with socket.socket() as probe:  # raises OSError (address in use) if the exporter still listens
        probe.bind(("127.0.0.1", port))


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_a_learner_resumes_exactly_from_its_checkpoint_on_its_device(tmp_path, device):
    """Loaded on the CPU and copied onto the device: RNG states must stay CPU byte tensors (a CUDA resume failed).
    On CUDA the plain graph (``fast_path: graph``): with ``auto`` the maths switch to the compiled ones whenever the
    background compile ends, so two learners' next updates could differ by float32 rounding."""
    config = smoke(tmp_path, f"learner.device={device}", "learner.fast_path=graph")
    service = make_learner_service(config, serve_metrics=False)
    service.ingest(make_worker(config).rollout(300, random_actions=True))  # 600 steps: 200 updates due
    service.train(max_updates=30)
    assert service.checkpoint() == tmp_path / "checkpoints" / "step_000000600"
    resumed = make_learner_service(config, resume="auto", serve_metrics=False)
    assert (resumed.learner.updates_done, service.learner.updates_done) == (30, 30)
    probe = torch.linspace(-1, 1, 4 * resumed.learner.dims.policy_in, device=device).view(4, -1)
    for learner in (service.learner, resumed.learner):  # the same next update from the same state and RNGs
        learner.update_block(5)
    same = service.learner.sac.actor.deterministic(probe), resumed.learner.sac.actor.deterministic(probe)
    assert torch.equal(*same)
