"""The distributed service on a real local Ray head (loopback): job submit, learning, gate, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cluster.config import load_config
from cluster.ray_actors import TestHooks
from cluster.ray_driver import run_ray
from tests.conftest import RAY_ENV, ROOT, ray_bin

pytestmark = pytest.mark.slow


def smoke(tmp_path, head, *extra: str):
    return load_config(ROOT / "configs" / "smoke.yaml", [*head.overrides(), f"train.run_dir={tmp_path}", *extra])


def test_ray_job_submit_runs_the_smoke_config(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    run_dir = tmp_path / "job"
    entrypoint = (
        f"{sys.executable} -m cluster.train --config configs/smoke.yaml "
        f"--set cluster.node_ip_address=127.0.0.1 --set train.run_dir={run_dir}"
    )
    runtime_env = json.dumps({"excludes": [".venv", "runs", ".git", "*.pt"]})
    result = subprocess.run(
        [ray_bin("ray"), "job", "submit", "--address", ray_head.dashboard, "--working-dir", str(ROOT),
         "--runtime-env-json", runtime_env, "--no-wait", "--", *entrypoint.split()],
        capture_output=True, text=True, env={**__import__("os").environ, **RAY_ENV}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = next(line.split("'")[1] for line in result.stdout.splitlines() if "submitted successfully" in line)
    client = JobSubmissionClient(ray_head.dashboard)
    deadline = time.monotonic() + 600
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job did not finish in 10 minutes"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    summary = json.loads((run_dir / "final_stats.json").read_text())
    assert summary["env_steps"] == 1200
    assert summary["updates"] == 500  # utd 0.5 over the 1000 steps after warmup
    assert (run_dir / "config.yaml").exists()
    assert "env_steps=" in logs and "updates/s=" in logs


def test_weight_gate_stops_nan_weights_from_reaching_actors(ray_client, tmp_path):
    config = smoke(tmp_path, ray_client)
    assert run_ray(config, hooks=TestHooks(poison_weights_from_version=2)) == 0
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    # each 50-step fragment after warmup brings 25 updates and one broadcast attempt (broadcast_every 20):
    # 20 attempts; the first trained one became v2, the 19 after it were refused
    assert summary["weights_version"] == 2
    assert summary["counters"]["weights_rejected"] == 19
    actors = summary["fleet"]["actors"]
    assert [a["policy_finite"] for a in actors] == [True, True]
    assert [a["weights_version"] for a in actors] == [2, 2]


def test_killed_actor_restarts_with_current_weights_and_nothing_is_inserted_twice(ray_client, tmp_path):
    import ray

    config = smoke(tmp_path, ray_client, "train.total_env_steps=2000")
    killed: list[int] = []

    def kill_once(driver) -> None:
        if not killed and driver.weights[0] >= 3:
            killed.append(driver.weights[0])
            ray.kill(driver.fleet.actors[0], no_restart=False)

    assert run_ray(config, on_tick=kill_once) == 0
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    fleet = summary["fleet"]
    assert killed and fleet["restarts"] == [1, 0] and fleet["alive"] == 2
    ((sent, first_fragment),) = fleet["restart_versions"]
    assert sent >= killed[0] and first_fragment == sent  # fetched the current weights before sampling
    assert fleet["actors"][0]["incarnation"] != 0
    assert summary["counters"]["fragments_duplicate"] == 0
    assert summary["env_steps"] == 2000  # training went on to the end


def test_two_actors_learn_pendulum_on_ray(ray_client, tmp_path):
    config = load_config(
        ROOT / "configs" / "pendulum.yaml",
        [*ray_client.overrides(), f"train.run_dir={tmp_path}", "cluster.num_actors=2", "env.num_envs=4",
         "train.total_env_steps=12000", "learner.device=cpu", "learner.hidden_sizes=[64, 64]"],
    )  # fmt: skip
    assert run_ray(config) == 0
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    print("ray return curve:", summary["return_curve"][::10])
    assert summary["env_steps"] == 12000
    assert summary["recent_return"] >= -300.0


def test_nan_update_on_ray_rolls_back_and_training_goes_on(ray_client, tmp_path):
    config = smoke(tmp_path, ray_client)
    assert run_ray(config, hooks=TestHooks(nan_grad_at_update=100)) == 0
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    assert summary["counters"]["nan_blocks"] == 1 and summary["counters"]["rollbacks"] == 1
    assert summary["remedies"] == {"reward_scale_applied": 1, "lr_applied": 1}
    assert summary["updates"] == 500 and summary["env_steps"] == 1200
    emergencies = list((tmp_path / "checkpoints").glob("emergency_step_*"))
    assert len(emergencies) == 1
    assert all(a["policy_finite"] for a in summary["fleet"]["actors"])


def test_nan_update_with_on_nan_stop_exits_4_with_the_resume_command(ray_client, tmp_path, caplog):
    config = smoke(tmp_path, ray_client, "safety.on_nan=stop")
    with caplog.at_level("ERROR"):  # update 300 comes at env step 800, after the checkpoint at 500
        assert run_ray(config, hooks=TestHooks(nan_grad_at_update=300)) == 4
    message = "\n".join(r.getMessage() for r in caplog.records if "non-finite update" in r.getMessage())
    assert "--resume auto" in message and "last good checkpoint" in message


def test_a_taken_metrics_port_on_ray_exits_2_naming_the_port(ray_client, tmp_path, capsys):
    import socket

    from cluster.train import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sets = [*ray_client.overrides(), f"train.run_dir={tmp_path}", f"metrics.port={port}"]
        code = main(["--config", str(ROOT / "configs" / "smoke.yaml"), *[a for s in sets for a in ("--set", s)]])
    assert code == 2
    error = capsys.readouterr().err
    assert "the learner actor did not start" in error and str(port) in error and "metrics.port" in error


def test_standalone_start_skips_a_recorded_cluster_that_does_not_answer(ray_head, monkeypatch):
    from cluster.ray_driver import running_cluster_address
    from tests.conftest import free_port

    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    assert running_cluster_address() == ray_head.address  # a live head is joined
    dead = f"127.0.0.1:{free_port()}"  # a head killed without `ray stop` leaves its address behind
    monkeypatch.setenv("RAY_ADDRESS", dead)
    started = time.monotonic()
    assert running_cluster_address() is None
    assert time.monotonic() - started < 5.0  # not Ray's minutes of retries
