"""The in-process driver: the budget contract, resume without losing data, stopping, records on every exit."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from cluster.config import load_config
from cluster.local import run_local
from learner.checkpoint import Checkpointer
from learner.safety import NonFiniteStop
from tests.actors.nan_observation_env import INJECT_AT, NaNObservationPendulum
from tests.conftest import ROOT
from tests.learner.helpers import SEED_TAGS, read_back


def smoke(tmp_path, *extra: str):
    sets = ["cluster.mode=local", f"train.run_dir={tmp_path}", "metrics.enabled=false", *extra]
    return load_config(ROOT / "configs" / "smoke.yaml", sets)


def saved(tmp_path) -> dict:
    return json.loads((tmp_path / "final_stats.json").read_text())


def test_the_budget_is_met_to_the_next_whole_fragment(tmp_path):
    summary = run_local(smoke(tmp_path, "train.total_env_steps=1220"))  # fragments of 2 envs x 25 steps
    assert summary["env_steps"] == summary["replay_size"] == 1250
    assert summary["exit_code"] == 0 and saved(tmp_path) == summary
    spent = summary["learner_seconds"]  # where the learner's time went: its phases and the rest add up to its wall
    assert set(spent) == {"ingest", "train", "broadcast", "checkpoint", "idle", "wall"}
    assert sum(v for k, v in spent.items() if k != "wall") == pytest.approx(spent["wall"], abs=0.01)
    assert spent["train"] > 0 and spent["ingest"] > 0 and spent["broadcast"] > 0
    board = read_back(tmp_path / "tensorboard")  # utd 0.5 after 200 warmup steps: 525 updates in blocks of 10
    assert set(board) >= SEED_TAGS and [step for step, _ in board["train/q_mean"]] == [10, 500]


def test_a_resumed_run_drops_nothing_and_its_counters_go_on(tmp_path, caplog):
    first = run_local(smoke(tmp_path, "train.total_env_steps=600"))
    assert first["last_checkpoint_step"] == 600 and first["updates"] == 200  # utd 0.5 after 200 warm-up steps
    with caplog.at_level("INFO", logger="dmsac"):
        resumed = run_local(smoke(tmp_path, "train.total_env_steps=1200"), resume="auto")
    # before fragment identity was unique per process start, the first 12 new fragments were "duplicates"
    assert resumed["counters"]["fragments_duplicate"] == 0
    assert resumed["env_steps"] == 1200 and resumed["env_steps_this_run"] == 600
    assert resumed["replay_size"] == 1200  # the checkpoint's 600 transitions and the 600 new ones
    assert resumed["updates"] == 500 and resumed["updates_this_run"] == 300
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")]
    rate = float(done[0].split("mean_updates/s=")[1].split()[0])
    assert rate == pytest.approx(300 / resumed["wall_seconds"], rel=0.05)  # this run's updates, not all 500
    final = str(tmp_path / "checkpoints" / "step_000001200")
    assert sum(final in r.getMessage() for r in caplog.records) == 1  # named once, by the done line


def test_observations_poisoned_by_the_environment_are_dropped_and_counted_end_to_end(tmp_path):
    NaNObservationPendulum.forget()
    env = "env.id=tests.actors.nan_observation_env:NaNObservationPendulum"
    summary = run_local(smoke(tmp_path, env, "train.total_env_steps=1200"))
    injected = NaNObservationPendulum.injected
    assert injected == 2 * len(INJECT_AT)  # two environments, 600 steps each
    assert summary["transitions_rejected"] == {"obs_nonfinite": injected, "reward_nonfinite": 0, "action_nonfinite": 0}
    assert summary["counters"]["episodes_cut_short"] == injected
    assert summary["replay_size"] == 1200 - injected
    replay = Checkpointer(tmp_path / "checkpoints", 2).load(tmp_path / "checkpoints" / "step_000001200").replay
    assert all(bool(torch.isfinite(tensor).all()) for tensor in replay["storage"].values())
    assert all(bool(torch.isfinite(torch.as_tensor(a)).all()) for a in NaNObservationPendulum.actions)


def interrupt_at_update(update: int):
    """A grad hook that sends this process a real SIGINT when update ``update`` is reached."""

    def hook(n, grads):
        if n == update:
            os.kill(os.getpid(), signal.SIGINT)

    return hook


def test_a_stop_starts_no_further_block_and_keeps_every_fragment(tmp_path):
    config = smoke(tmp_path, "train.total_env_steps=100000", "checkpoint.every_env_steps=100000")
    summary = run_local(config, grad_hook=interrupt_at_update(123))
    assert summary["exit_code"] == 0 and summary["stop_requested_at_update"] == 123
    # a fragment's 25 updates run as blocks of 10, 10 and 5: the block running at the signal (updates 120-124)
    # ends, no other starts
    assert summary["updates"] == 125
    assert summary["replay_size"] == summary["env_steps"] == summary["last_checkpoint_step"]


def signals_on_rollout_and_final_checkpoint(monkeypatch, rollout: int) -> None:
    """SIGINT during the ``rollout``-th fragment's collection, and again while the final checkpoint is written."""
    import cluster.local
    from learner import checkpoint as checkpoint_module

    first: list[int] = []
    make_worker = cluster.local.make_worker

    def make_signalling_worker(*args, **kwargs):
        worker = make_worker(*args, **kwargs)
        collect = worker.rollout

        def rollout(*a, **k):
            if worker.seq + 1 == rollout_number and not first:
                first.append(worker.seq)
                os.kill(os.getpid(), signal.SIGINT)
            return collect(*a, **k)

        worker.rollout = rollout
        return worker

    def second_during_final_checkpoint(phase: str) -> None:
        if phase == "before_manifest" and first:
            os.kill(os.getpid(), signal.SIGINT)

    rollout_number = rollout
    monkeypatch.setattr(cluster.local, "make_worker", make_signalling_worker)
    monkeypatch.setattr(checkpoint_module, "env_fault_hook", second_during_final_checkpoint)


def test_a_second_signal_ends_the_run_at_once_with_exit_130(tmp_path, monkeypatch, capsys):
    from cluster.train import main

    signals_on_rollout_and_final_checkpoint(monkeypatch, rollout=10)
    sets = ["cluster.mode=local", f"train.run_dir={tmp_path}", "metrics.enabled=false", "checkpoint.every_env_steps=200"]
    code = main(["--config", str(ROOT / "configs" / "smoke.yaml"), *[a for s in sets for a in ("--set", s)]])
    assert code == 130
    err = capsys.readouterr().err
    assert "stopped: second SIGINT: stopped at once, without a final checkpoint" in err and "Traceback" not in err
    summary = saved(tmp_path)
    assert summary["exit_code"] == 130 and summary["env_steps"] == 500  # the tenth fragment was kept
    assert Checkpointer(tmp_path / "checkpoints", 2).latest_good().name == "step_000000400"


def test_a_stop_on_a_non_finite_update_records_exit_4(tmp_path):
    def nan_at_60(n, grads):
        if n == 60:
            grads[0].fill_(float("nan"))

    with pytest.raises(NonFiniteStop, match="no good checkpoint was written yet; emergency checkpoint"):
        run_local(smoke(tmp_path, "safety.on_nan=stop"), grad_hook=nan_at_60)
    summary = saved(tmp_path)
    assert summary["exit_code"] == 4 and "non-finite update" in summary["exit_reason"]
    assert summary["counters"]["nan_blocks"] == 1 and summary["updates"] == 60
