"""``train.parallel_runs``: several runs in one local job, each exactly the run it would be alone, each a run
directory of its own (resume, evaluate)."""

from __future__ import annotations

import json

import pytest
import torch

from cluster.config import ConfigError, load_config, run_configs
from cluster.evaluate import trained_checkpoint
from cluster.local import run_local
from cluster.train import resolve_resume_spec
from learner.checkpoint import Checkpointer, CheckpointError
from tests.conftest import ROOT
from tests.learner.helpers import assert_same_state

GRID = "train.run_overrides=[[], [learner.lr=3e-4, learner.reward_scale=0.5]]"


def job(tmp_path, *extra: str):
    sets = ["cluster.mode=local", f"train.run_dir={tmp_path / 'job'}", "metrics.enabled=false",
            "train.parallel_runs=2", GRID, *extra]  # fmt: skip
    return load_config(ROOT / "configs" / "smoke.yaml", sets)


def final_state(run_dir, step: int) -> dict:
    return Checkpointer(run_dir / "checkpoints", 2).load(run_dir / "checkpoints" / f"step_{step:09d}").state


def test_each_run_of_a_job_is_exactly_the_run_it_would_be_alone(tmp_path):
    summary = run_local(job(tmp_path, "train.total_env_steps=600"))
    runs = [tmp_path / "job" / "runs" / str(k) for k in range(2)]
    assert json.loads((tmp_path / "job" / "final_stats.json").read_text()) == summary
    assert [r["env_steps"] for r in summary["runs"]] == [600, 600]
    assert [r["updates"] for r in summary["runs"]] == [200, 200]  # utd 0.5 after 200 warm-up steps
    for k, run_dir in enumerate(runs):  # a whole single-run directory, its config a single run's
        config = load_config(run_dir / "config.yaml")
        assert (config.train.seed, config.train.parallel_runs, config.train.run_dir) == (k, 1, str(run_dir))
        assert json.loads((run_dir / "final_stats.json").read_text()) == summary["runs"][k]
    assert load_config(runs[1] / "config.yaml").learner.lr == 3e-4
    # run 1 trained by itself, from its own config: the same networks, optimizers and counters (to float32 rounding:
    # the stack's products round differently from one run's) and the same random streams
    alone = run_local(load_config(runs[1] / "config.yaml", [f"train.run_dir={tmp_path / 'alone'}"]))
    assert alone["updates"] == 200
    assert alone["recent_return"] == pytest.approx(summary["runs"][1]["recent_return"], rel=1e-4)
    together, by_itself = final_state(runs[1], 600), final_state(tmp_path / "alone", 600)
    assert_same_state(together["learner"]["sac"], by_itself["learner"]["sac"], "sac")
    assert not torch.equal(together["learner"]["sac"]["actor"]["net.0.weight"],
                           final_state(runs[0], 600)["learner"]["sac"]["actor"]["net.0.weight"])  # fmt: skip


def test_resume_auto_continues_every_run_and_evaluate_takes_one(tmp_path):
    run_local(job(tmp_path, "train.total_env_steps=600"))
    config = job(tmp_path, "train.total_env_steps=1200")
    resumed = run_local(config, resume=resolve_resume_spec(config, "auto"))
    for run in resumed["runs"]:
        assert (run["env_steps"], run["env_steps_this_run"], run["replay_size"]) == (1200, 600, 1200)
        assert run["updates"] == 500 and run["counters"]["fragments_duplicate"] == 0
    with pytest.raises(ConfigError, match="each run resumes from its own last good checkpoint"):
        resolve_resume_spec(config, str(tmp_path / "job" / "runs" / "0" / "checkpoints" / "step_000001200"))
    with pytest.raises(CheckpointError, match=r"a job of 2 parallel runs .* --checkpoint .*runs/0"):
        trained_checkpoint(str(tmp_path / "job"))
    assert trained_checkpoint(str(tmp_path / "job" / "runs" / "1")).name == "step_000001200"


def test_a_job_of_one_run_trains_with_its_run_override_and_records_it(tmp_path):
    """A study of one (arm, seed) is a job of one run: its override is not dropped, and its run directory's config
    (what ``--resume`` and ``cluster.evaluate`` read) carries it."""
    summary = run_local(job(tmp_path, "train.parallel_runs=1", "train.total_env_steps=400",
                            "train.run_overrides=[[learner.reward_scale=0.5]]"))  # fmt: skip
    saved = load_config(tmp_path / "job" / "config.yaml")
    assert (saved.learner.reward_scale, saved.train.run_overrides, summary["env_steps"]) == (0.5, (), 400)
    assert final_state(tmp_path / "job", 400)["learner"]["sac"]["reward_scale"] == 0.5


def test_run_overrides_are_checked_and_name_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"train.run_overrides\[0\]: cluster.num_actors is the job's"):
        run_configs(job(tmp_path, "train.run_overrides=[[cluster.num_actors=3], []]"))
    with pytest.raises(ConfigError, match=r"train.run_overrides: lists 1 runs, train.parallel_runs is 2"):
        job(tmp_path, "train.run_overrides=[[]]")
    with pytest.raises(ConfigError, match=r"train.run_overrides\[1\].*learner.lr: "):
        run_configs(job(tmp_path, "train.run_overrides=[[], [learner.lr=-1]]"))
    (single,) = run_configs(job(tmp_path, "train.parallel_runs=1", "train.run_overrides=[[learner.lr=0.002]]"))
    assert (single.learner.lr, single.train.run_dir, single.train.run_overrides) == (0.002, str(tmp_path / "job"), ())  # not lost
    with pytest.raises(ConfigError, match=r"train.run_overrides\[0\]: metrics.port is the job's"):
        run_configs(job(tmp_path, "train.parallel_runs=1", "train.run_overrides=[[metrics.port=1]]"))
    configs = run_configs(job(tmp_path, "train.parallel_runs=3", "train.run_overrides=[]", "metrics.port=9500"))
    assert [(c.train.seed, c.metrics.port) for c in configs] == [(0, 9500), (1, 9501), (2, 9502)]
