"""NaN safety: detection at the bad update, emergency checkpoint, rollback with remedies, stop, exact resume."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest
import torch

from learner.checkpoint import Checkpointer
from learner.metrics import MetricsExporter
from learner.safety import (
    NonFiniteStop,
    Remedies,
    RollbackLimiter,
    RollbackToLastGood,
    Safety,
    SafetyConfig,
    Stop,
    WarningSignsConfig,
    WarningWatch,
    apply_remedies,
    signs_holding,
    warning_thresholds,
)
from learner.service import LearnerService, Schedule
from learner.types import UpdateStats
from tests.learner.helpers import make_fragment, make_learner

SCHEDULE = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=5, broadcast_every=5, batch_size=8,
                    checkpoint_every=0)  # fmt: skip


def one_shot_nan_at(update: int):
    fired = []

    def hook(n, grads):
        if n == update and not fired:
            fired.append(n)
            grads[0].fill_(float("nan"))

    return hook


def metric(exporter: MetricsExporter, name: str, **labels) -> float:
    return exporter.registry.get_sample_value(name, labels or None)


DEFAULT_SAFETY = SafetyConfig()


def make_service(tmp_path, response, config=DEFAULT_SAFETY, metrics=None, reward_scale=1.0):
    learner = make_learner()
    learner.set_rates(reward_scale, learner.rates()[1])
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


def test_nan_at_update_k_is_caught_checkpointed_rolled_back_and_remedied(tmp_path):
    exporter = MetricsExporter()
    service = make_service(tmp_path, RollbackToLastGood(SafetyConfig()), metrics=exporter, reward_scale=1e-3)
    service.learner.sac.grad_hook = one_shot_nan_at(7)
    lr_before = service.learner.rates()[1]
    published = []
    for seq in range(1, 4):  # 16 transitions each: 48 updates due in total
        weights = service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq)).weights
        published += [weights] if weights is not None else []
    learner = service.learner
    assert learner.updates_done == 48 and learner.parameters_finite()
    assert service.safety.counts["nan_blocks"] == 1 and service.safety.counts["rollbacks"] == 1
    # the seed's remedies, applied once
    assert learner.rates() == pytest.approx((1e-4, lr_before * 0.1))
    assert service.safety.remedies == Remedies(1, 1)
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
    assert faulty.safety.counts["rollbacks"] == 1 and faulty.learner.updates_done == 7
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
    # On Ray, steps queued behind the stopped one still reach this service: they only ingest. Nothing trains or
    # checkpoints after the stop, so the checkpoint the message names stays the last good one.
    updates, checkpoints = service.learner.updates_done, service.counters["checkpoints"]
    service.schedule = dataclasses.replace(service.schedule, checkpoint_every=8)  # due at the next step
    assert service.learner.env_steps == 16 and service.updates_due() == 10  # the stopped block is still due
    report = service.step(make_fragment(steps=8, envs=2, seq=2, seed=2))
    assert service.stopping and report.blocks == () and report.weights is None
    assert (service.learner.updates_done, service.counters["checkpoints"], len(service.learner.replay)) == (
        updates, checkpoints, 32)
    assert service.checkpointer.latest_good() == good


def test_rollback_loop_turns_into_a_stop(tmp_path):
    config = SafetyConfig(max_rollbacks=1, rollback_window_updates=1000)
    service = make_service(tmp_path, RollbackToLastGood(config), config=config)
    service.learner.ingest(make_fragment(steps=8, envs=2, seq=1))
    service.learner.sac.grad_hook = lambda n, grads: grads[0].fill_(float("nan"))
    with pytest.raises(NonFiniteStop):
        service.train(max_updates=20)
    assert service.safety.counts["rollbacks"] == 1


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
    assert float(first.learner.sac.alpha()) == float(resumed.learner.sac.alpha())
    assert (first.learner.updates_done, first.learner.env_steps) == (resumed.learner.updates_done, 48)
    assert resumed.learner.replay.position == first.learner.replay.position


def test_safety_config_rejects_bad_values():
    with pytest.raises(pydantic.ValidationError, match="lr_factor"):  # no config object holds a bad value
        dataclasses.replace(SafetyConfig(), lr_factor=0.0)


def block(updates: int = 25, **values: float) -> UpdateStats:
    base = dict(policy_grad_norm=1.0, q_grad_norm=1.0, q_mean=-10.0, q_std=1.0, alpha=0.5, policy_loss=0.0,
                q_loss=0.0, policy_clipped=0, q_clipped=0, nonfinite_loss=0, nonfinite_grad=0, nonfinite_q=0)  # fmt: skip
    return UpdateStats(updates=updates, **{**base, **values})


def test_the_seed_warning_thresholds_resolve_against_the_clip_limit():
    assert warning_thresholds(WarningSignsConfig(), max_grad_norm=5.0) == {
        "policy_grad_norm": 4.5, "q_grad_norm": 4.5, "q_mean": 10000.0, "q_std": 5000.0,
    }  # fmt: skip
    thresholds = warning_thresholds(WarningSignsConfig(), 5.0)
    # rewards are negative: Q diverges downward, so |Q mean| is compared; NaN belongs to the NaN guard
    assert signs_holding(block(q_mean=-2.1e7, q_std=7e6, policy_grad_norm=1e5), thresholds) == {
        "q_mean": 2.1e7, "q_std": 7e6, "policy_grad_norm": 1e5,
    }  # fmt: skip
    assert signs_holding(block(q_mean=float("nan"), q_grad_norm=4.5), thresholds) == {}


def test_warning_signs_are_logged_rate_limited_and_reported_once_sustained(caplog):
    watch = WarningWatch(warning_thresholds(WarningSignsConfig(), 5.0), sustain_updates=100, log_every_updates=50)
    sustained = []
    with caplog.at_level("WARNING", logger="learner.safety"):
        for end in range(25, 201, 25):  # eight blocks of 25 updates, all with |Q mean| = 20 000
            sustained.append(watch.observe(block(q_mean=-20000.0), end))
    assert sustained == [[], [], [], ["q_mean"], [], [], [], ["q_mean"]]  # 100 updates held, then 100 more
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [  # one line per 50 updates at most
        f"warning sign: |q_mean|=2e+04 > 10000 at update {u} (held for {u} updates; see deploy/prometheus/RUNBOOK.md)"
        for u in (25, 75, 125, 175)
    ]
    assert watch.observe(block(), 225) == [] and watch.held_since == {}  # it cleared
    assert watch.observe(block(q_mean=-20000.0), 250) == []  # a new hold counts from its start


def test_a_sustained_warning_sign_applies_the_seed_remedies_with_on_warning_remedy(tmp_path, caplog):
    """The incident's shape: rewards far too large for the reward scale (×10⁶): gradient norms explode first."""
    config = dataclasses.replace(DEFAULT_SAFETY, on_warning="remedy", warning_sustain_updates=10)
    service = make_service(tmp_path, Stop(), config=config, reward_scale=1e6)
    lr = service.learner.rates()[1]
    with caplog.at_level("WARNING"):
        for seq in range(1, 4):  # 16 updates a step in blocks of 5, 5, 5, 1
            service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq))
    assert service.safety.counts["warning_remedies"] == 2  # at most 2 of each remedy (SafetyConfig's limits)
    assert service.safety.remedies == Remedies(2, 2)
    assert service.learner.rates() == (pytest.approx(1e4), pytest.approx(lr * 0.01))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("warning sign: q_grad_norm=") for m in messages)
    assert any("held for 10 updates: reward_scale 1e+06 -> 100000, lr" in m for m in messages)
    assert any("the remedies are spent" in m for m in messages)


def test_on_warning_log_only_logs(tmp_path, caplog):
    service = make_service(tmp_path, Stop(), reward_scale=1e6)
    with caplog.at_level("WARNING"):
        service.step(make_fragment(steps=8, envs=2, seq=1))
    assert service.safety.counts["warning_remedies"] == 0 and service.learner.rates()[0] == 1e6
    assert any(r.getMessage().startswith("warning sign: q_grad_norm=") for r in caplog.records)
    # the progress line's WARN part: the same signs, values and thresholds as the latest block's log check
    holding = service.progress().warnings
    latest = signs_holding(service.last_stats, service.safety.watch.thresholds)
    assert holding == {name: (value, service.safety.watch.thresholds[name]) for name, value in latest.items()}
    assert "q_grad_norm" in holding and holding["q_grad_norm"][1] == 4.5
