"""What every driver shares: exit codes, the run record and its done line."""

from __future__ import annotations

import json

from cluster.config import ConfigError
from cluster.runner import (
    CapacityError,
    LearnerStartError,
    RunRecord,
    SecondSignal,
    exit_code_for,
    format_progress,
    recorded,
)
from learner.checkpoint import NoGoodCheckpointError
from learner.metrics import MetricsPortInUseError
from learner.safety import NonFiniteStop
from learner.service import Progress


def progress(env_steps: int, updates: int, recent_return: float = float("nan")) -> Progress:
    return Progress(env_steps, updates, 0.0, 1.0, recent_return, 0, 1, env_steps)


def test_exit_codes_are_the_documented_ones():
    assert [exit_code_for(e) for e in (ConfigError("f", "k", "m"), NoGoodCheckpointError("x"),
                                       MetricsPortInUseError("p"), LearnerStartError("s"))] == [2, 2, 2, 2]  # fmt: skip
    assert exit_code_for(CapacityError("gone")) == 3
    assert exit_code_for(NonFiniteStop("nan")) == 4
    assert exit_code_for(SecondSignal("twice")) == exit_code_for(KeyboardInterrupt()) == 130
    assert exit_code_for(ValueError("a bug")) == 1


def test_rates_count_this_process_only(tmp_path):
    now = [100.0]
    record = RunRecord(tmp_path, progress(50_000, 40_000), clock=lambda: now[0])  # resumed at update 40 000
    now[0] = 110.0
    record.update(progress(52_048, 42_048, -120.0))
    assert record.mean_update_rate() == 204.8  # 2 048 updates in 10 s, not 42 048
    line = record.done_line("runs/x/checkpoints/step_000052048")
    assert "mean_updates/s=204.8 wall_s=10; final checkpoint runs/x/checkpoints/step_000052048" in line
    summary = record.write(0)
    assert (summary["updates_this_run"], summary["env_steps_this_run"]) == (2048, 2048)
    assert json.loads((tmp_path / "final_stats.json").read_text())["return_curve"] == [[52048, -120.0, 10.0]]


def test_the_return_curve_keeps_one_point_per_env_step_with_its_wall_time(tmp_path):
    now = [50.0]
    record = RunRecord(tmp_path, progress(0, 0), clock=lambda: now[0])
    for tick in range(3):  # the Ray driver reports the same progress on every tick
        now[0] = 51.0 + tick
        record.update(progress(100, 10, -5.0))
    now[0] = 62.5
    record.update(progress(200, 20, -4.0))
    assert record.history == [(100, -5.0, 1.0), (200, -4.0, 12.5)]


def test_an_error_that_ends_a_run_is_recorded_with_its_exit_code(tmp_path):
    try:
        with recorded(tmp_path, lambda: None):
            raise CapacityError("every rollout actor has been gone for over 60 s")
    except CapacityError:
        pass
    assert json.loads((tmp_path / "final_stats.json").read_text()) == {
        "exit_code": 3, "exit_reason": "every rollout actor has been gone for over 60 s",
    }  # fmt: skip


def test_the_progress_line_carries_the_warning_signs_that_hold():
    progress = Progress(env_steps=5000, updates=4000, updates_per_second=117.25, update_to_data=1.0,
                        recent_return=-2.2e6, episodes=3, weights_version=40, replay_size=5000,
                        last_checkpoint_step=-1)  # fmt: skip
    quiet = ("env_steps=5000 updates=4000 updates/s=117.2 utd=1.00 recent_return=-2200000.0 episodes=3 "
             "weights_v=40 replay=5000 last_ckpt=none")  # fmt: skip
    assert format_progress(progress) == quiet
    loud = Progress(**{**progress.__dict__, "warnings": {"q_mean": (2.1e7, 1e4), "policy_grad_norm": (1e5, 4.5)}})
    assert format_progress(loud, "actors=2") == f"{quiet} WARN |q_mean|=2.1e+07>1e+04 policy_grad_norm=1e+05>4.5 actors=2"
