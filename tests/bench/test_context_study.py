"""The context study's bookkeeping: segments across resumes, paired gains, the floors, the curve band."""

from __future__ import annotations

import json

import pytest

from bench.context_study import aggregate, curve_band, finished, floors, paired_gain, record_segment, run_row


def row(arm: str, seed: int, error: float, ret: float) -> dict:
    figures = {"mean_abs_speed_error": error, "mean_return": ret, "mean_abs_jerk": 0.5, "mean_abs_action_change": 0.01}
    return {"arm": arm, "seed": seed, "env_steps": 1000, "mean_updates_per_second": 200.0, "eval": figures}


ROWS = [row("none", 0, 0.30, -1300.0), row("none", 1, 0.20, -1100.0),
        row("oracle", 0, 0.24, -1150.0), row("oracle", 1, 0.18, -1000.0),
        row("pooled", 0, 0.27, -1250.0), row("pooled", 1, 0.19, -1050.0)]  # fmt: skip
PID = {"mean_abs_speed_error": 0.22, "mean_return": -1200.0}


def test_the_gain_is_the_relative_error_reduction_paired_by_seed():
    gain = paired_gain(ROWS, "oracle")  # seed 0: 0.06 / 0.30 = 20 %; seed 1: 0.02 / 0.20 = 10 %
    assert gain["mean"] == pytest.approx(0.15) and gain["n"] == 2
    assert gain["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.2 and 0.1
    assert paired_gain(ROWS, "none") is None


def test_the_floors_name_the_best_arm_against_pid_and_the_maps_share_of_the_oracle_gain():
    measured = floors(aggregate(ROWS, ["none", "oracle", "pooled"]), PID)
    assert measured["best_arm"] == "oracle"  # mean return -1075
    assert measured["best_return_gain_vs_pid"] == pytest.approx((-1075.0 + 1200.0) / 1200.0)
    assert measured["best_error_vs_pid"] == pytest.approx(0.21 - 0.22)
    assert measured["oracle_gain"] == pytest.approx(0.15)
    # pooled: seed 0 0.03 / 0.30 = 10 %, seed 1 0.01 / 0.20 = 5 %: 7.5 % of 15 % is half
    assert measured["pooled_share_of_oracle_gain"] == pytest.approx(0.5)


def test_the_feed_forward_arms_are_measured_against_their_own_oracle():
    rows = ROWS + [row("oracle_ff", 0, 0.15, -900.0), row("oracle_ff", 1, 0.12, -850.0),
                   row("basis_ff", 0, 0.18, -950.0), row("basis_ff", 1, 0.14, -900.0)]  # fmt: skip
    measured = floors(aggregate(rows, ["none", "oracle", "pooled", "oracle_ff", "basis_ff"]), PID)
    assert measured["best_arm"] == "oracle_ff" and measured["oracle_gain"] == pytest.approx(0.15)
    assert measured["oracle_ff_gain"] == pytest.approx(0.45)  # 0.15 / 0.30 and 0.08 / 0.20
    assert measured["basis_ff_share_of_oracle_ff_gain"] == pytest.approx(0.35 / 0.45)  # 0.12 / 0.30 and 0.06 / 0.20
    assert "basis_ff_share_of_oracle_gain" not in measured and "pooled_share_of_oracle_ff_gain" not in measured
    base = {"mean_abs_speed_error": 0.15, "mean_return": -800.0, "mean_abs_jerk": 1.0}
    table = aggregate([{**r, "base": base} if r["arm"] == "oracle_ff" else r for r in rows], ["none", "oracle_ff"])
    assert table["oracle_ff"]["base_alone"] == {"mean_abs_speed_error": 0.15, "mean_return": -800.0}
    assert table["none"]["base_alone"] is None


def test_the_best_non_residual_arm_is_reported_beside_the_best_arm():
    rows = ROWS + [row("direct", 0, 0.25, -1260.0), row("direct", 1, 0.23, -1140.0)]
    measured = floors(aggregate(rows, ["none", "oracle", "pooled", "direct"]), PID)
    assert measured["best_arm"] == "oracle"
    assert measured["best_direct_arm"] == "direct"  # mean return -1200, error 0.24
    assert measured["best_direct_return_gain_vs_pid"] == pytest.approx(0.0)
    assert measured["best_direct_error_vs_pid"] == pytest.approx(0.24 - 0.22)
    assert "best_direct_arm" not in floors(aggregate(ROWS, ["none", "oracle", "pooled"]), PID)


def test_a_failed_run_is_counted_and_left_out_of_the_means():
    rows = ROWS[:2] + [{"arm": "oracle", "seed": 0, "error": "cluster.evaluate exit 2: no checkpoint"}]
    table = aggregate(rows, ["none", "oracle"])
    assert table["oracle"]["failed"] == 1 and table["oracle"]["mean_return"]["n"] == 0
    assert table["none"]["mean_return"] == {"mean": -1200.0, "std": pytest.approx(141.42136, rel=1e-6), "n": 2}


def test_segments_of_a_resumed_run_add_up_to_its_rate_and_curve(tmp_path):
    run_dir = tmp_path / "runs" / "none-seed0"
    run_dir.mkdir(parents=True)
    for env_steps, updates, wall, curve in ((600, 150, 10.0, [[400, -9.0]]), (1000, 100, 40.0, [[800, -5.0]])):
        final = {"exit_code": 0, "env_steps": env_steps, "updates": 250, "wall_seconds": wall,
                 "updates_this_run": updates, "return_curve": curve, "counters": {"rollbacks": 0}}  # fmt: skip
        (run_dir / "final_stats.json").write_text(json.dumps(final))
        record_segment(run_dir, 0)
    assert finished(run_dir, 1000) and not finished(run_dir, 1001)

    class Args:
        work = tmp_path

    built = run_row(Args, "none", 0, {"sac": {"mean_return": -1.0}, "pid": {"mean_return": -2.0}})
    assert built["mean_updates_per_second"] == pytest.approx(250 / 50.0)  # both segments' updates over their wall
    assert built["curve"] == [[400, -9.0], [800, -5.0]] and built["segments"] == 2
    assert (built["eval"], built["pid"]) == ({"mean_return": -1.0}, {"mean_return": -2.0})


def test_the_curve_band_reads_each_run_at_common_env_steps():
    runs = [{"curve": [[0, -10.0], [100, -4.0]]}, {"curve": [[0, -6.0], [100, -2.0], [200, 0.0]]}]
    band = curve_band(runs, points=3)  # marks 0, 50, 100 (the shorter run ends at 100)
    assert band["x"] == [0.0, 50.0, 100.0]
    assert band["y"] == [-8.0, -8.0, -3.0]  # the last value at or before each mark
    assert band["hi"][2] - band["y"][2] == pytest.approx(1.4142136, rel=1e-6)


def test_one_job_runs_every_arm_and_seed_as_a_parallel_run(tmp_path):
    from bench.context_study import one_job_overrides, parse_args
    from cluster.config import load_config, run_configs
    from tests.conftest import ROOT

    args = parse_args(["--one-job", "--work", str(tmp_path), "--steps", "5000", "--set", "env.vehicle.action=residual_pid"])
    runs = [("none", 0), ("oracle", 0), ("history", 1), ("privileged", 1), ("direct", 2), ("oracle_ff", 2),
            ("basis_ff", 2)]  # fmt: skip
    config = load_config(ROOT / "configs" / "vehicle_agile.yaml", one_job_overrides(args, runs, tmp_path / "job"))
    assert (config.cluster.mode, config.train.parallel_runs, config.train.total_env_steps) == ("local", 7, 5000)
    configs = run_configs(config)
    assert [(c.context.mode, c.context.privileged_critic, c.train.seed, c.env.vehicle.action) for c in configs] == [
        ("none", False, 0, "residual_pid"), ("oracle", False, 0, "residual_pid"), ("history", False, 1, "residual_pid"),
        ("dynamics_map", True, 1, "residual_pid"), ("dynamics_map", False, 2, "direct"),  # the arm wins over --set
        ("oracle", False, 2, "residual_map"), ("dynamics_map", False, 2, "residual_map")]
    assert (configs[6].context.reconstruction, configs[6].context.encoder) == ("basis", "basis")
    assert not configs[6].context.append_history
    with_history = load_config(ROOT / "configs" / "vehicle_agile.yaml",
                               one_job_overrides(args, [("basis_ff_history", 0)], tmp_path / "job2"))  # fmt: skip
    (history_run,) = run_configs(with_history)
    assert (history_run.context.append_history, history_run.env.vehicle.action) == (True, "residual_map")
    assert {(c.learner.lr, c.env.num_envs) for c in configs} == {(3e-4, 32)}
    assert configs[2].train.run_dir == str(tmp_path / "job" / "runs" / "2")
    on_ray = parse_args(["--one-job", "--work", str(tmp_path), "--address", "127.0.0.1:6379"])
    config = load_config(ROOT / "configs" / "vehicle_agile.yaml", one_job_overrides(on_ray, runs, tmp_path / "job"))
    assert (config.cluster.mode, config.cluster.address, config.cluster.num_actors, config.env.num_envs) == (
        "ray", "127.0.0.1:6379", 2, 16)  # each run with its own two actors of 16 environments


def test_progress_lines_are_read_per_run_of_a_job(tmp_path):
    from bench.context_study import last_progress_by_run

    log = tmp_path / "train.log"
    log.write_text("x INFO dmsac: run 0: env_steps=100 updates=5 updates/s=3.0 utd=0.1\n"
                   "x INFO dmsac: run 1: env_steps=200 updates=7 updates/s=4.5 utd=0.1\n"
                   "x INFO dmsac: run 0: env_steps=300 updates=9 updates/s=6.0 utd=0.1\n")  # fmt: skip
    assert last_progress_by_run(log, "job") == {"job run 0": (300, 9, 6.0), "job run 1": (200, 7, 4.5)}
    log.write_text("x INFO dmsac: done: env_steps=50 updates=2 updates/s=0.0 utd=0.1\n")
    assert last_progress_by_run(log, "none-seed0") == {"none-seed0": (50, 2, 0.0)}
    assert last_progress_by_run(tmp_path / "missing.log", "a") == {"a": None}


def test_the_return_panel_leaves_a_diverging_start_and_a_far_arm_off_its_range():
    from bench.context_study import return_range

    x = [0.0, 250.0, 500.0, 750.0, 1000.0]
    good = {"label": "none", "x": x, "y": [-90000.0, -3000.0, -2500.0, -2200.0, -2000.0]}  # first 20 %: left out
    far = {"label": "direct", "x": x, "y": [-90000.0, -40000.0, -30000.0, -20000.0, -15000.0]}  # below 4 x PID
    (low, high), off = return_range([good, far], pid_return=-3062.0)
    assert off == ["direct"]
    assert low == pytest.approx(-3062.0 - 0.05 * 1062.0) and high == pytest.approx(-2000.0 + 0.05 * 1062.0)
