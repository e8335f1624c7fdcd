"""The in-job rate bench's reading of a job: its progress lines, the steady window, the learner alone."""

from __future__ import annotations

import pytest

from bench.in_job_rate import alone, job_overrides, parse_args, progress_points, steady_rate
from tests.conftest import ROOT

LOG = """2026-12-01 20:00:00,000 INFO dmsac: learner on cuda:0 (127.0.0.1 pid 7); 8 rollout actors x 16 envs
2026-12-01 20:00:02,000 INFO dmsac: env_steps=20000 updates=0 updates/s=0.0 utd=0.00 recent_return=n/a
2026-12-01 20:00:10,000 INFO dmsac: env_steps=30000 updates=10000 updates/s=900.0 utd=0.50 recent_return=n/a
2026-12-01 20:00:12,500 INFO dmsac: env_steps=35000 updates=14000 updates/s=1600.0 utd=0.55 recent_return=-9
(LearnerActor pid=7) 2026-12-01 20:00:13,000 INFO dmsac: env_steps=1 updates=1 updates/s=1 (not the driver's)
2026-12-01 20:00:17,500 INFO dmsac: env_steps=45000 updates=22000 updates/s=1600.0 utd=0.62 recent_return=-8
2026-12-01 20:00:18,000 INFO dmsac: done: env_steps=50000 updates=23000 updates/s=0.0 mean_updates/s=1000.0
"""


def test_the_steady_rate_is_the_slope_after_a_fifth_of_the_updates():
    points = progress_points(LOG)
    assert [(p[1], p[2]) for p in points] == [(20000, 0), (30000, 10000), (35000, 14000), (45000, 22000)]
    assert points[3][0] - points[1][0] == pytest.approx(7.5)
    steady = steady_rate(points)  # 20 % of 22 000 = 4 400: from the 10 000 line, 12 000 updates in 7.5 s
    assert steady == {"from_updates": 10000, "to_updates": 22000, "seconds": pytest.approx(7.5), "rate": pytest.approx(1600.0)}
    assert steady_rate(points[:1]) is None


def test_the_learner_alone_is_the_jobs_own_learner_timed_block_by_block(tmp_path):
    config = str(ROOT / "configs" / "smoke.yaml")
    args = parse_args(["--config", config, "--seconds", "0.05", "--repeats", "2", "--capacity", "500",
                       "--set", "learner.device=cpu"])  # fmt: skip
    measured = alone(args, [*args.overrides, "cluster.num_actors=2"])
    assert (measured["device"], measured["batch"], measured["block_updates"]) == ("cpu", 64, 10)
    assert len(measured["rates"]) == 2 and all(rate > 0 for rate in measured["rates"])
    sets = job_overrides(args, tmp_path)
    assert sets[:1] == ["learner.device=cpu"] and "cluster.num_actors=8" in sets and "cluster.mode=ray" in sets


def test_the_service_alone_trains_a_fragments_updates_per_call_and_broadcasts(tmp_path):
    from bench.in_job_rate import service_alone

    config = str(ROOT / "configs" / "smoke.yaml")
    args = parse_args(["--config", config, "--seconds", "0.05", "--repeats", "2", "--capacity", "500",
                       "--set", "learner.device=cpu"])  # fmt: skip
    measured = service_alone(args, [*args.overrides, "cluster.num_actors=2"], tmp_path)
    assert measured["updates_per_call"] == 25  # smoke: fragments of 25 steps x 2 envs, update_to_data 0.5
    calls = 5 + 2 * measured["calls_per_round"]  # a first call, warm-up and probe, then 2 rounds: 25 updates each
    assert measured["updates"] == 25 * calls
    assert measured["broadcasts"] == calls  # one per call, as per fragment in the job (smoke: due every 20 updates)
    assert len(measured["rates"]) == 2 and all(rate > 0 for rate in measured["rates"])


def test_where_the_jobs_learner_spent_its_time_is_read_as_shares_of_its_wall():
    from bench.common import machine
    from bench.in_job_rate import markdown, time_shares

    seconds = {"ingest": 2.0, "train": 80.0, "broadcast": 3.0, "checkpoint": 5.0, "idle": 10.0, "wall": 100.0}
    timing = time_shares(seconds, updates=160_000)
    assert timing["shares"] == {"ingest": 0.02, "train": 0.8, "broadcast": 0.03, "checkpoint": 0.05, "idle": 0.1}
    assert timing["training_rate"] == 2000.0  # 160 000 updates in 80 s of training
    assert time_shares({}, 5) is None
    report = {"machine": machine(), "command": "c", "actors": 8,
              "alone": {"device": "cuda", "batch": 256, "block_updates": 50, "fast_path": "auto", "rates": [2000.0],
                        "median": 2000.0},
              "service": {"updates_per_call": 2048, "rates": [1900.0], "median": 1900.0},
              "job": {"steady": None, "mean_updates_per_second": 1500.0, "updates": 160_000, "env_steps": 170_000,
                      "wall_s": 120.0, "learner_seconds": seconds}, "ratio": None}  # fmt: skip
    text = markdown(report)
    assert "1,900 updates/s, 95.0 % of alone" in text
    assert "train 80.0 %" in text and "idle 10.0 %" in text and "training 2,000 updates/s" in text


def test_the_profile_merges_device_spans_and_blames_each_idle_gap_on_the_host_code_running_when_it_began():
    from bench.in_job_rate import busy_intervals, idle_by_host_code

    busy = busy_intervals([(0, 10), (5, 12), (12, 20), (50, 60), (65, 70), (100, 130), (110, 120)])
    assert busy == [(0, 20), (50, 60), (65, 70), (100, 130)]
    host = [(0, 200, "train"), (15, 45, "launch"), (18, 40, "copy_"), (62, 64, "cat"), (80, 90, "read")]
    gaps, by_code = idle_by_host_code(busy, host)
    # 20..50 begins inside copy_ (the innermost op then); 60..65 is under the 20 µs floor; 70..100 begins inside
    # train only: blamed on it, not on read, which starts later
    assert gaps == [(20, 50), (70, 100)]
    assert by_code == {"copy_": 30, "train": 30}
    # no op running: the last one that ended before the gap; none at all: "?"
    assert idle_by_host_code(busy, [(1, 2, "early"), (66, 68, "late")])[1] == {"early": 30, "late": 30}
    assert idle_by_host_code(busy, [])[1] == {"?": 60}
