"""NaN safety: detection at the bad update, emergency checkpoint, rollback with remedies, stop, exact resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.checkpoint import Checkpointer
from learner.metrics import MetricsExporter
from learner.safety import (
    NonFiniteStop,
    Remedies,
    RollbackLimiter,
    RollbackToLastGood,
    SafetyConfig,
    Stop,
    apply_remedies,
)
from learner.service import LearnerService, Safety, Schedule
from tests.learner.helpers import make_fragment, make_learner

SCHEDULE = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=5, broadcast_every=5, batch_size=8,
                    checkpoint_every=0)  # fmt: skip


def one_shot_nan_at(update: int):
    fired = []

    def hook(n, critic):
        if n == update and not fired:
            fired.append(n)
            next(critic.parameters()).grad.fill_(float("nan"))

    return hook


def metric(exporter: MetricsExporter, name: str, **labels) -> float:
    return exporter.registry.get_sample_value(name, labels or None)


DEFAULT_SAFETY = SafetyConfig()


def make_service(tmp_path, response, config=DEFAULT_SAFETY, metrics=None, reward_scale=1.0):
    learner = make_learner()
    learner.sac.reward_scale.fill_(reward_scale)
    checkpointer = Checkpointer(tmp_path / "ckpt", keep_last=2)
    safety = Safety(config, response, "python -m cluster.train --config run/config.yaml --resume auto")
    return LearnerService(learner, SCHEDULE, safety=safety, checkpointer=checkpointer, metrics=metrics)


def test_remedies_follow_factor_floor_and_limit():
    config = SafetyConfig(reward_scale_factor=0.1, reward_scale_floor=1e-5, max_reward_scale_remedies=2,
                          lr_factor=0.5, lr_floor=1e-4, max_lr_remedies=5)  # fmt: skip
    scale, lr, done = apply_remedies(config, 1e-3, 3e-4, Remedies())
    assert (scale, lr, done) == (pytest.approx(1e-4), pytest.approx(1.5e-4), Remedies(1, 1))
    scale, lr, done = apply_remedies(config, scale, lr, done)
    assert (scale, lr, done) == (pytest.approx(1e-5), pytest.approx(1e-4), Remedies(2, 2))  # both hit floors
    scale, lr, done = apply_remedies(config, scale, lr, done)
    assert (scale, lr, done) == (pytest.approx(1e-5), pytest.approx(1e-4), Remedies(2, 2))  # limits / floors hold


def test_rollback_limiter_window():
    limiter = RollbackLimiter(limit=2, window=100)
    assert [limiter.allow(u) for u in (10, 50, 120)] == [True, True, True]  # 10 left the window at 120
    assert limiter.allow(130) is False  # 50, 120, 130 within 100 updates


def test_a_step_reports_the_statistics_of_every_block_it_ran(tmp_path):
    service = make_service(tmp_path, Stop())
    for seq in (1, 2):  # 16 transitions a step: 16 updates due, in blocks of at most 5
        report = service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq))
        assert [b.updates for b in report.blocks] == [5, 5, 5, 1]
        assert report.blocks[-1] == service.last_stats
    assert service.learner.updates_done == 32


def test_nan_at_update_k_is_caught_checkpointed_rolled_back_and_remedied(tmp_path):
    exporter = MetricsExporter()
    service = make_service(tmp_path, RollbackToLastGood(SafetyConfig()), metrics=exporter, reward_scale=1e-3)
    service.learner.sac.grad_hook = one_shot_nan_at(7)
    lr_before = service.learner.sac.learning_rate()
    published = []
    for seq in range(1, 4):  # 16 transitions each: 48 updates due in total
        weights = service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq)).weights
        published += [weights] if weights is not None else []
    learner = service.learner
    assert learner.updates_done == 48 and learner.parameters_finite()
    assert service.counters["nan_blocks"] == 1 and service.counters["rollbacks"] == 1
    # the seed's remedies, applied once
    assert float(learner.sac.reward_scale) == pytest.approx(1e-4)
    assert learner.sac.learning_rate() == pytest.approx(lr_before * 0.1)
    assert service.remedies == Remedies(1, 1)
    # no non-finite tensor was ever published
    assert published and all(all(torch.isfinite(t).all() for t in w.tensors.values()) for w in published)
    # emergency checkpoint: the state before update 7 and the offending batch
    (emergency,) = [e for e in service.checkpointer.entries() if e.kind == "emergency"]
    extra = torch.load(emergency.path / "extra.pt", weights_only=True)
    state = torch.load(emergency.path / "state.pt", weights_only=True)
    assert extra["bad_update"] == 7 and state["learner"]["sac"]["updates_done"] == 7
    assert extra["offending_batch"]["obs"].shape == (8, 3)
    assert len(extra["stats_history"]) >= 1 and "context_nonfinite" in extra["context_stats"]
    # and the metrics count it
    assert metric(exporter, "dmsac_nan_events_total", source="grad") == 1.0
    assert metric(exporter, "dmsac_rollbacks_total") == 1.0
    assert metric(exporter, "dmsac_reward_scale") == pytest.approx(1e-4)
    assert metric(exporter, "dmsac_learning_rate", network="q") == pytest.approx(lr_before * 0.1)


def test_rollback_restores_the_exact_state_before_the_bad_update(tmp_path):
    reference = make_service(tmp_path / "a", RollbackToLastGood(SafetyConfig()))
    faulty = make_service(tmp_path / "b", RollbackToLastGood(SafetyConfig(reward_scale_factor=1.0, lr_factor=1.0)))
    faulty.learner.sac.grad_hook = one_shot_nan_at(7)
    for service in (reference, faulty):
        service.learner.ingest(make_fragment(steps=8, envs=2, seq=1))
        service.train(max_updates=7)
    expected = [p.clone() for p in reference.learner.sac.critic.parameters()]
    faulty.train(max_updates=5)  # update 7 (the first of this block) is bad
    assert faulty.counters["rollbacks"] == 1 and faulty.learner.updates_done == 7
    restored = list(faulty.learner.sac.critic.parameters())
    assert all(torch.equal(a, b) for a, b in zip(expected, restored, strict=True))


def test_stop_names_the_last_good_checkpoint_and_the_resume_command(tmp_path):
    service = make_service(tmp_path, Stop())
    service.learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    service.train(max_updates=5)
    good = service.checkpoint()
    service.learner.sac.grad_hook = one_shot_nan_at(6)
    with pytest.raises(NonFiniteStop) as info:
        service.train(max_updates=5)
    message = str(info.value)
    assert str(good) in message and "--resume auto" in message and "emergency" in message
    assert service.checkpointer.latest_good() == good


def test_rollback_loop_turns_into_a_stop(tmp_path):
    config = SafetyConfig(max_rollbacks=1, rollback_window_updates=1000)
    service = make_service(tmp_path, RollbackToLastGood(config), config=config)
    service.learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    service.learner.sac.grad_hook = lambda n, critic: next(critic.parameters()).grad.fill_(float("nan"))
    with pytest.raises(NonFiniteStop):
        service.train(max_updates=20)
    assert service.counters["rollbacks"] == 1


def test_non_finite_parameters_are_never_checkpointed_as_good(tmp_path):
    exporter = MetricsExporter()
    service = make_service(tmp_path, Stop(), metrics=exporter)
    service.learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    assert service.checkpoint() is not None
    with torch.no_grad():
        next(service.learner.sac.critic.parameters()).fill_(float("inf"))
    assert service.checkpoint() is None
    assert metric(exporter, "dmsac_nan_events_total", source="params") == 1.0
    assert service.checkpointer.latest_good().name == "step_000000016"


def test_exact_resume_is_bitwise(tmp_path):
    probe = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))

    def run_updates(service, count):
        actions = []
        for _ in range(count // 5):
            service.train(max_updates=5)
            with torch.no_grad():
                actions.append(service.learner.sac.actor.deterministic(probe).clone())
        return actions

    first = make_service(tmp_path, Stop())
    for seq in range(1, 4):
        first.learner.ingest(make_fragment(steps=8, envs=2, seq=seq, seed=seq))
    run_updates(first, 10)
    path = first.checkpoint()
    actions_a = run_updates(first, 20)
    resumed = make_service(tmp_path / "other", Stop())
    loaded = first.checkpointer.load(path)
    resumed.load_full_state(loaded.state, loaded.replay)
    actions_b = run_updates(resumed, 20)
    assert all(torch.equal(a, b) for a, b in zip(actions_a, actions_b, strict=True))
    state_a, state_b = first.learner.sac.state_dict(), resumed.learner.sac.state_dict()
    for name in ("actor", "critic", "critic_target"):
        assert all(torch.equal(state_a[name][k], state_b[name][k]) for k in state_a[name])
    assert float(first.learner.sac.temperature.alpha()) == float(resumed.learner.sac.temperature.alpha())
    assert (first.learner.updates_done, first.learner.env_steps) == (resumed.learner.updates_done, 48)
    assert resumed.learner.replay.position == first.learner.replay.position


def test_safety_config_rejects_bad_values():
    from learner.types import ConfigValueError

    with pytest.raises(ConfigValueError, match="lr_factor"):
        dataclasses.replace(SafetyConfig(), lr_factor=0.0)
