"""The evaluation command prints a table with the PID and random figures."""

from __future__ import annotations

from pathlib import Path

from cluster.evaluate import main

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


def test_pid_refuses_a_gymnasium_config(capsys):
    assert main(["--config", str(ROOT / "configs" / "pendulum.yaml"), "--policy", "pid", "--episodes", "1"]) == 2
    assert "vehicle" in capsys.readouterr().err
