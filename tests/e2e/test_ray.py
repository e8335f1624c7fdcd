"""The distributed service on a real local Ray head (loopback): job submit, learning, gate, restarts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cluster.config import load_config
from cluster.ray_actors import TestHooks
from cluster.ray_driver import run_ray
from tests.conftest import RAY_ENV, ROOT, finished_job, ray_bin, venv_path
from tests.learner.helpers import SEED_TAGS, read_back

pytestmark = pytest.mark.slow


def smoke(tmp_path, head, *extra: str):
    return load_config(ROOT / "configs" / "smoke.yaml", [*head.overrides(), f"train.run_dir={tmp_path}", *extra])


def test_ray_job_submit_runs_the_smoke_config(ray_head, tmp_path):
    run_dir = tmp_path / "job"
    entrypoint = (
        f"{sys.executable} -m cluster.train --config configs/smoke.yaml "
        f"--set cluster.node_ip_address=127.0.0.1 --set train.run_dir={run_dir}"
    )
    runtime_env = json.dumps({"excludes": [".venv", "runs", ".git", "*.pt"]})
    result = subprocess.run(
        [ray_bin("ray"), "job", "submit", "--address", ray_head.dashboard, "--working-dir", str(ROOT),
         "--runtime-env-json", runtime_env, "--no-wait", "--", *entrypoint.split()],
        capture_output=True, text=True, env={**os.environ, **RAY_ENV, "PATH": venv_path()}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = next(line.split("'")[1] for line in result.stdout.splitlines() if "submitted successfully" in line)
    status, logs = finished_job(ray_head.dashboard, job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    summary = json.loads((run_dir / "final_stats.json").read_text())
    assert summary["env_steps"] == 1200
    assert summary["updates"] == 500  # utd 0.5 over the 1000 steps after warmup
    assert (run_dir / "config.yaml").exists()
    assert "env_steps=" in logs and "updates/s=" in logs
    board = read_back(run_dir / "tensorboard")  # the learner actor's points, flushed by the final checkpoint
    assert set(board) >= SEED_TAGS and board["train/q_mean"][-1][0] == 500


def test_weight_gate_stops_nan_weights_from_reaching_actors(ray_client, tmp_path):
    config = smoke(tmp_path, ray_client)
    summary = run_ray(config, hooks=TestHooks(poison_weights_from_version=2))
    # each 50-step fragment after warmup brings 25 updates and one broadcast attempt (broadcast_every 20):
    # 20 attempts; the first trained one became v2, the 19 after it were refused
    assert summary["weights_version"] == 2
    assert summary["counters"]["weights_rejected"] == 19
    actors = summary["fleet"]["actors"]
    assert [a["policy_finite"] for a in actors] == [True, True]
    assert [a["weights_version"] for a in actors] == [2, 2]


def test_killed_actor_restarts_with_current_weights_and_the_budget_is_exact(ray_client, tmp_path):
    import ray

    config = smoke(tmp_path, ray_client, "train.total_env_steps=2000")
    killed: list[int] = []

    def kill_once(driver) -> None:
        if not killed and driver.learner.weights[0][0] >= 3:
            killed.append(driver.learner.weights[0][0])
            ray.kill(driver.fleet.actors[0], no_restart=False)

    summary = run_ray(config, on_tick=kill_once)
    fleet = summary["fleet"]
    # the fragment lost with actor 0 is asked of actor 0 again, so its restart is seen however fast actor 1 is
    assert killed and fleet["restarts"] == [1, 0] and fleet["alive"] == 2
    ((sent, first_fragment),) = fleet["restart_versions"]
    assert sent >= killed[0] and first_fragment == sent  # fetched the current weights before sampling
    assert fleet["actors"][0]["incarnation"] == fleet["incarnations"][0]
    assert summary["counters"]["fragments_duplicate"] == 0
    # the budget is exact (2000 is 40 fragments of 2 envs x 25 steps) and every step received was ingested
    assert summary["env_steps"] == fleet["env_steps_received"] == 2000
    assert summary["replay_size"] == 2000


def test_a_budget_between_fragments_is_rounded_up_to_the_next_whole_fragment(ray_client, tmp_path):
    summary = run_ray(smoke(tmp_path, ray_client, "train.total_env_steps=1220"))
    assert summary["env_steps"] == summary["fleet"]["env_steps_received"] == 1250  # 25 fragments of 50 steps


def test_two_actors_learn_pendulum_on_ray(ray_client, tmp_path):
    # Ray's asynchrony (which actor's fragment comes first, which weights it ran) varies the curve from run to
    # run: three runs were at -110 to -195 by 11 400 steps, one under -300 at 12 000; 15 000 leave a margin.
    config = load_config(
        ROOT / "configs" / "pendulum.yaml",
        [*ray_client.overrides(), f"train.run_dir={tmp_path}", "cluster.num_actors=2", "env.num_envs=4",
         "train.total_env_steps=15000", "learner.device=cpu", "learner.hidden_sizes=[64, 64]"],
    )  # fmt: skip
    summary = run_ray(config)
    print("ray return curve:", summary["return_curve"][::10])
    assert summary["env_steps"] == 15000
    assert summary["recent_return"] >= -300.0


def test_nan_update_on_ray_rolls_back_and_training_goes_on(ray_client, tmp_path):
    config = smoke(tmp_path, ray_client)
    summary = run_ray(config, hooks=TestHooks(nan_grad_at_update=100))
    assert summary["counters"]["nan_blocks"] == 1 and summary["counters"]["rollbacks"] == 1
    assert summary["remedies"] == {"reward_scale_applied": 1, "lr_applied": 1}
    assert summary["updates"] == 500 and summary["env_steps"] == 1200
    emergencies = list((tmp_path / "checkpoints").glob("emergency_step_*"))
    assert len(emergencies) == 1
    assert all(a["policy_finite"] for a in summary["fleet"]["actors"])


def test_nan_update_with_on_nan_stop_raises_with_the_resume_command_and_records_exit_4(ray_client, tmp_path):
    from learner.safety import NonFiniteStop

    config = smoke(tmp_path, ray_client, "safety.on_nan=stop")
    with pytest.raises(NonFiniteStop) as stopped:  # update 300 comes at env step 800, after the checkpoint at 500
        run_ray(config, hooks=TestHooks(nan_grad_at_update=300))
    message = str(stopped.value)
    assert "--resume auto" in message and "last good checkpoint" in message and "step_000000500" in message
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    assert summary["exit_code"] == 4 and summary["exit_reason"] == message
    assert summary["counters"]["nan_blocks"] == 1 and summary["last_checkpoint_step"] == 500


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
    assert json.loads((tmp_path / "final_stats.json").read_text())["exit_code"] == 2


def test_stop_request_stores_every_fragment_in_flight_and_starts_no_update(ray_client, tmp_path):
    """A real SIGINT to this process (the driver's), sent from the loop's hook once training runs."""
    import os
    import signal

    config = smoke(tmp_path, ray_client, "train.total_env_steps=100000", "checkpoint.every_env_steps=100000")
    sent: list[int] = []

    def interrupt(driver) -> None:
        if not sent and driver.progress.updates >= 100:
            sent.append(driver.progress.updates)
            os.kill(os.getpid(), signal.SIGINT)

    summary = run_ray(config, on_tick=interrupt)
    assert sent and summary["exit_code"] == 0
    stopped_at = summary["stop_requested_at_update"]
    assert stopped_at >= sent[0]
    assert summary["updates"] - stopped_at <= config.learner.block_updates  # only the block running at the stop
    # every fragment the actors were collecting at the stop reached replay; nothing dropped
    assert summary["env_steps"] == summary["fleet"]["env_steps_received"] == summary["replay_size"]
    assert summary["env_steps"] % 50 == 0 and summary["env_steps"] < 100000
    assert summary["last_checkpoint_step"] == summary["env_steps"]  # the final checkpoint holds all of it


def test_resume_on_ray_drops_nothing_and_continues_the_budget(ray_client, tmp_path):
    first = run_ray(smoke(tmp_path, ray_client, "train.total_env_steps=600"))
    assert first["env_steps"] == 600 and first["last_checkpoint_step"] == 600
    checkpoint = tmp_path / "checkpoints" / "step_000000600"
    resumed = run_ray(smoke(tmp_path, ray_client, "train.total_env_steps=1200"), resume=str(checkpoint))
    assert resumed["counters"]["fragments_duplicate"] == 0
    assert resumed["env_steps_this_run"] == resumed["fleet"]["env_steps_received"] - 600 == 600
    assert resumed["env_steps"] == 1200 and resumed["replay_size"] == 1200
    assert resumed["updates"] == 500 and resumed["updates_this_run"] == 500 - first["updates"]


def test_actors_the_cluster_cannot_place_end_the_job_with_exit_3(ray_client, tmp_path):
    from cluster.runner import CapacityError

    # the test head has 4 CPUs; 5 rollout actors and the learner need 6
    config = smoke(tmp_path, ray_client, "cluster.num_actors=5", "cluster.schedule_timeout_s=3")
    with pytest.raises(CapacityError, match=r"requests for \{CPU: 1\} pending for over 3 s") as err:
        run_ray(config)
    message = str(err.value)
    assert "the cluster has {CPU: 4} in all" in message and "the job needs 6 CPUs (5 rollout actors" in message
    assert "not started yet: " in message
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    assert summary["exit_code"] == 3 and "cannot give the job" in summary["exit_reason"]


def test_standalone_start_skips_a_recorded_cluster_that_does_not_answer(ray_head, monkeypatch):
    from cluster.placement import running_cluster_address
    from tests.conftest import free_port

    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    assert running_cluster_address() == ray_head.address  # a live head is joined
    dead = f"127.0.0.1:{free_port()}"  # a head killed without `ray stop` leaves its address behind
    monkeypatch.setenv("RAY_ADDRESS", dead)
    probes = []
    real_connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: probes.append((a, kw)) or real_connect(*a, **kw))
    assert running_cluster_address() is None
    host, port = dead.split(":")
    to_dead = [probe for probe in probes if probe[0][0] == (host, int(port))]  # other threads may connect too
    assert to_dead == [(((host, int(port)),), {"timeout": 3.0})]  # one bounded probe, not Ray's minutes of retries
