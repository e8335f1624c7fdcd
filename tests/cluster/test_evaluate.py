"""The evaluation command: baselines, and any checkpoint scored on held-out vehicles against the PID."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.vehicle.evaluation import evaluate_policy
from cluster.config import Config, load_config
from cluster.evaluate import evaluate_baseline, evaluate_trained, load_trained, main, make_eval_env
from cluster.factory import actor_seed, make_learner_service

ROOT = Path(__file__).resolve().parents[2]


def figures(out: str) -> dict[str, float]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "metric" not in line]
    return {name.strip(): float(value) for name, value in rows}


def test_pid_and_random_on_short_vehicle_episodes(capsys):
    common = ["--config", str(ROOT / "configs" / "vehicle.yaml"), "--episodes", "3", "--seed", "2",
              "--set", "env.vehicle.episode_steps=300"]  # fmt: skip
    assert main([*common, "--policy", "pid"]) == 0
    pid = figures(capsys.readouterr().out)
    assert main([*common, "--policy", "random"]) == 0
    rand = figures(capsys.readouterr().out)
    assert pid["episodes"] == rand["episodes"] == 3
    assert pid["mean abs speed error (m/s)"] < 1.0 < rand["mean abs speed error (m/s)"]
    assert pid["mean return"] > 10 * rand["mean return"]  # both negative: the PID loses far less
    assert rand["mean abs action change"] > 0.5  # uniform actions: E|u - u'| = 2/3


def test_the_base_policy_is_the_residual_runs_base_controller_alone(capsys):
    """``--policy base`` under ``residual_pid`` drives exactly as the PID baseline (which drives directly); under a
    direct action it is refused with the reason."""
    common = ["--config", str(ROOT / "configs" / "vehicle_agile.yaml"), "--episodes", "3", "--seed", "2",
              "--set", "env.vehicle.episode_steps=300"]  # fmt: skip
    assert main([*common, "--policy", "base"]) == 0
    base = figures(capsys.readouterr().out)
    assert main([*common, "--policy", "pid"]) == 0
    assert base == figures(capsys.readouterr().out) and base["episodes"] == 3
    assert main([*common, "--policy", "base", "--set", "env.vehicle.action=direct"]) == 2
    assert "base controller under a residual action" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", "x", "--baseline", "none", "base"])
    assert "--baseline none goes alone" in capsys.readouterr().err


def test_pid_refuses_a_gymnasium_config(capsys):
    assert main(["--config", str(ROOT / "configs" / "pendulum.yaml"), "--policy", "pid", "--episodes", "1"]) == 2
    assert "vehicle" in capsys.readouterr().err


CONSTANT = 0.3
"""The action of the checkpointed policy below, whatever it sees."""
SHORT = ["--set", "env.vehicle.episode_steps=200"]


def small_vehicle_run(tmp_path: Path) -> Config:
    return load_config(ROOT / "configs" / "vehicle.yaml", [
        f"train.run_dir={tmp_path}", "cluster.mode=local", "metrics.enabled=false", "metrics.tensorboard=false",
        "learner.hidden_sizes=[16,16]", "learner.batch_size=32", "replay.capacity=1000", "env.num_envs=2",
        "context.grid_u=20", "context.grid_v=20", "context.prior_vehicles=16"])  # fmt: skip


def constant_policy_checkpoint(tmp_path: Path) -> Path:
    """A run's checkpoint whose policy's mean action is ``CONSTANT`` everywhere (last layer: zero weights)."""
    service = make_learner_service(small_vehicle_run(tmp_path), serve_metrics=False)
    last = service.learner.sac.actor.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([math.atanh(CONSTANT), -5.0]))  # mean, log-std of the one action
    return service.checkpoint()


def test_a_checkpoint_scores_exactly_as_its_known_policy_driven_directly(tmp_path, capsys):
    path = constant_policy_checkpoint(tmp_path / "run")
    assert main(["--checkpoint", str(tmp_path / "run"), "--episodes", "3", "--seed", "424242", *SHORT,
                 "--baseline", "none"]) == 0  # fmt: skip
    scored = figures(capsys.readouterr().out)
    config, actor = load_trained(path, ["env.vehicle.episode_steps=200"])
    env = make_eval_env(config, 3, 424242)
    # the known action as the policy computes it: tanh in float32, rescaled to the env's [low, high] in float32
    tanh = torch.tanh(torch.tensor([math.atanh(CONSTANT)], dtype=torch.float32)).numpy()
    known = env.action_low + (tanh + 1.0) * 0.5 * (env.action_high - env.action_low)
    assert known[0] == pytest.approx(CONSTANT, abs=1e-7)
    direct = evaluate_policy(env, lambda obs: np.tile(known, (3, 1)), 3, seed=424242, dt=config.env.vehicle.dt)
    trained = evaluate_trained(config, actor, 3, 424242)
    assert trained.episode_returns == direct.episode_returns and trained.episode_errors == direct.episode_errors
    assert scored["mean return"] == float(f"{direct.mean_return:.1f}") and scored["episodes"] == 3
    assert scored["mean abs speed error (m/s)"] == float(f"{direct.mean_abs_speed_error:.3f}")
    assert scored["mean abs action change"] == 0.0  # a constant action never changes


def test_the_report_pairs_the_policy_with_pid_on_the_same_vehicles(tmp_path, capsys):
    path = constant_policy_checkpoint(tmp_path / "run")
    out = tmp_path / "report"
    assert main(["--checkpoint", str(tmp_path / "run"), "--episodes", "4", "--seed", "424242", *SHORT,
                 "--report", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| metric" in printed and " | sac | pid |" in printed
    episodes = json.loads((out / "episodes.json").read_text())
    config, actor = load_trained(path, ["env.vehicle.episode_steps=200"])
    pid = evaluate_baseline(config, "pid", 4, 424242)  # the same 4 vehicles, driven by the PID
    sac = evaluate_trained(config, actor, 4, 424242)
    assert episodes["pid"] == {"return": list(pid.episode_returns), "abs_speed_error": list(pid.episode_errors)}
    assert episodes["sac"] == {"return": list(sac.episode_returns), "abs_speed_error": list(sac.episode_errors)}
    assert len(episodes["sac"]["return"]) == 4 and episodes["sac"]["return"] != episodes["pid"]["return"]
    summary = json.loads((out / "summary.json").read_text())["policies"]
    assert summary["sac"]["mean_return"] == sac.mean_return == pytest.approx(sum(sac.episode_returns) / 4, rel=1e-12)
    assert summary["pid"]["mean_abs_speed_error"] == pid.mean_abs_speed_error
    assert summary["sac"]["mean_abs_action_change"] == sac.mean_abs_action_change == 0.0  # a constant action
    assert (summary["sac"]["episodes"], summary["pid"]["episodes"]) == (4, 4)
    assert sorted(p.name for p in out.iterdir()) == [
        "episodes.json", "error_distribution.png", "per_vehicle.png", "report.md", "speed_traces.png", "summary.json"]
    assert "![speed_traces](speed_traces.png)" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("problem", "message"),
    [("missing", "no such file or directory"), ("corrupt", "sha256"), ("misfit", "does not fit the networks"),
     ("training_seed", "is a training, prior or encoder-pretraining seed")],
)  # fmt: skip
def test_what_cannot_be_evaluated_exits_2_with_the_reason(tmp_path, capsys, problem, message):
    path = constant_policy_checkpoint(tmp_path / "run")
    args = ["--checkpoint", str(path), "--episodes", "1", *SHORT]
    if problem == "missing":
        args[1] = str(tmp_path / "nowhere")
    if problem == "corrupt":
        state = path / "state.pt"
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    if problem == "misfit":
        args += ["--set", "learner.hidden_sizes=[8,8]"]
    if problem == "training_seed":
        args += ["--seed", str(actor_seed(small_vehicle_run(tmp_path), 1, 0))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
