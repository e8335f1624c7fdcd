"""Checkpointer: round trip, manifest checksums, retention, refusal of non-finite or unloadable state, emergencies."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.config import Config, ConfigError, load_config
from learner.checkpoint import CheckpointConfig, Checkpointer, NonFiniteCheckpointError, checkpoint_root
from learner.checkpoint_io import POINTER, sha256_file
from tests.config_errors import error_of
from tests.learner.helpers import assert_bitwise, make_replay, make_state

LOGGER = "learner.checkpoint"


def names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def pointer(root: Path) -> dict:
    return json.loads((root / POINTER).read_text())


@pytest.fixture
def ckpt(tmp_path: Path) -> Checkpointer:
    return Checkpointer(tmp_path / "checkpoints", keep_last=3)


def test_round_trip_is_bitwise(ckpt: Checkpointer) -> None:
    state, replay = make_state(), make_replay()
    path = ckpt.save(100, state, replay, "cafe", {"metrics": {"q_mean": 1.5}})
    loaded = ckpt.load(path)
    assert_bitwise(state, loaded.state, "state")
    assert_bitwise(replay, loaded.replay, "replay")
    assert math.copysign(1.0, float(loaded.state["odd"][0])) == -1.0
    assert loaded.state["odd"][1].item() == pytest.approx(1e-40, rel=1e-3)
    assert loaded.extra is None and loaded.manifest["step"] == 100


def test_manifest_records_sizes_and_sha256_of_the_bytes(ckpt: Checkpointer) -> None:
    meta = {"metrics": {"q_mean": 2.25, "policy_grad_norm": 0.5}, "remedies": {"reward_scale": 1}}
    path = ckpt.save(10_000, make_state(), make_replay(), "abc123", meta)
    assert path.name == "step_000010000"
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["replay.pt", "state.pt"]
    for fname, entry in manifest["files"].items():
        data = (path / fname).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data) == os.path.getsize(path / fname)
    assert (manifest["step"], manifest["config_hash"], manifest["kind"]) == (10_000, "abc123", "regular")
    assert manifest["finite"] is True and manifest["finite_detail"] == {"state": True, "replay": True}
    assert manifest["meta"] == meta
    assert pointer(ckpt.root) == {"step": 10_000, "path": "step_000010000"}
    assert not any(n.startswith(".tmp_") for n in names(ckpt.root))


def test_save_without_replay_lists_only_state(ckpt: Checkpointer) -> None:
    path = ckpt.save(5, make_state(), None, "h", None)
    assert sorted(json.loads((path / "manifest.json").read_text())["files"]) == ["state.pt"]
    assert ckpt.load(path).replay is None


def test_retention_keeps_last_n_and_emergencies(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (100, 200, 300, 400, 500):
        ckpt.save(step, make_state(), None, "h", {})
        if step in (200, 300):
            ckpt.save_emergency(step + 50, make_state(), {"batch": torch.ones(2)})
    assert names(tmp_path) == {
        "step_000000400", "step_000000500", "emergency_step_000000250", "emergency_step_000000350", POINTER,
    }  # fmt: skip
    assert pointer(tmp_path)["step"] == 500


def test_prune_never_removes_last_good(tmp_path: Path) -> None:
    def fail_before_swap(phase: str) -> None:
        if phase == "before_pointer_swap":
            raise RuntimeError("injected")

    Checkpointer(tmp_path, keep_last=2).save(100, make_state(), None, "h", {})
    ok = Checkpointer(tmp_path, keep_last=2)
    for step in (200, 300):
        ok.save(step, make_state(), None, "h", {})
    failing = Checkpointer(tmp_path, keep_last=2, fault_hook=fail_before_swap)
    for step in (400, 500):
        with pytest.raises(RuntimeError, match="injected"):
            failing.save(step, make_state(), None, "h", {})
    assert pointer(tmp_path)["step"] == 300
    assert ok.prune() == ["step_000000200"]
    assert names(tmp_path) == {"step_000000300", "step_000000400", "step_000000500", POINTER}
    assert ok.latest_good() == tmp_path / "step_000000300"


def test_resume_from_older_keeps_the_new_timeline(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (100, 200, 300):
        ckpt.save(step, make_state(), None, "h", {})
    ckpt.save(150, make_state(), None, "h", {})  # resumed from an older checkpoint
    assert pointer(tmp_path) == {"step": 150, "path": "step_000000150"}
    assert names(tmp_path) == {"step_000000150", "step_000000300", POINTER}


@pytest.mark.parametrize("where", ["state_tensor", "state_float", "replay"])
def test_nonfinite_state_is_refused(ckpt: Checkpointer, where: str) -> None:
    ckpt.save(100, make_state(), make_replay(), "h", {})
    before = names(ckpt.root)
    state, replay = make_state(), make_replay()
    if where == "state_tensor":
        state["policy"]["0.weight"][1, 2] = float("nan")
    elif where == "state_float":
        state["reward_scale"] = float("inf")
    else:
        replay["storage"]["obs"][3, 0] = float("-inf")
    with pytest.raises(NonFiniteCheckpointError, match="step 200"):
        ckpt.save(200, state, replay, "h", {})
    assert names(ckpt.root) == before
    assert pointer(ckpt.root)["step"] == 100


def test_custom_finite_check_is_used(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=1, finite_check=lambda tree: "policy" not in tree)
    with pytest.raises(NonFiniteCheckpointError):
        ckpt.save(1, make_state(), None, "h", {})
    assert not tmp_path.exists() or names(tmp_path) == set()


def test_emergency_checkpoint_keeps_nonfinite_evidence(ckpt: Checkpointer) -> None:
    ckpt.save(100, make_state(), None, "h", {})
    batch = torch.tensor([1.0, float("nan"), float("inf")])
    extra = {"batch": {"reward": batch}, "history": [{"q_mean": 1.0}, {"q_mean": float("nan")}]}
    first = ckpt.save_emergency(123, make_state(), extra, meta={"reason": "q_loss non-finite at update 7"})
    second = ckpt.save_emergency(123, make_state(), extra)
    assert (first.name, second.name) == ("emergency_step_000000123", "emergency_step_000000123_1")
    result = ckpt.verify(first)
    assert (result.ok, result.intact, result.step) == (False, True, 123)
    loaded = ckpt.load(first)
    assert_bitwise(batch, loaded.extra["batch"]["reward"])
    assert math.isnan(loaded.extra["history"][1]["q_mean"])
    assert loaded.manifest["finite_detail"] == {"state": True, "extra": False}
    assert loaded.manifest["meta"]["reason"] == "q_loss non-finite at update 7"
    assert pointer(ckpt.root)["step"] == 100 and ckpt.latest_good() == ckpt.root / "step_000000100"


def test_clean_temporaries(ckpt: Checkpointer, caplog: pytest.LogCaptureFixture) -> None:
    ckpt.save(100, make_state(), None, "h", {})
    (ckpt.root / ".tmp_step_000000200_4242").mkdir()
    (ckpt.root / ".tmp_step_000000200_4242" / "state.pt").write_bytes(b"partial")
    (ckpt.root / ".tmp_last_good.json_4242").write_text("{")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        removed = ckpt.clean_temporaries()
    assert removed == [".tmp_last_good.json_4242", ".tmp_step_000000200_4242"]
    assert ".tmp_step_000000200_4242" in caplog.text
    assert names(ckpt.root) == {"step_000000100", POINTER}


def test_values_weights_only_would_refuse_are_rejected_before_writing(ckpt: Checkpointer) -> None:
    state = make_state()
    state["rng"]["numpy"] = np.zeros(3)
    with pytest.raises(TypeError, match=r"state\.rng\.numpy: numpy\.ndarray"):
        ckpt.save(100, state, None, "h", {})
    with pytest.raises(TypeError, match="JSON"):
        ckpt.save(100, make_state(), None, "h", {"bad": torch.ones(1)})
    assert not ckpt.root.exists()


def test_same_step_again_keeps_the_verified_last_good(ckpt: Checkpointer) -> None:
    first = ckpt.save(100, make_state(1), None, "h", {})
    digest = sha256_file(first / "state.pt")
    assert ckpt.save(100, make_state(2), None, "h", {}) == first
    assert sha256_file(first / "state.pt") == digest


def test_checkpoint_config_checks_and_root(tmp_path: Path) -> None:
    config = CheckpointConfig()
    assert (config.every_env_steps, config.keep_last, config.save_replay, config.dir) == (50_000, 3, True, "")
    assert checkpoint_root(config, "runs/a") == Path("runs/a/checkpoints")
    assert checkpoint_root(CheckpointConfig(dir="/x/ck"), "runs/a") == Path("/x/ck")
    assert error_of(CheckpointConfig, keep_last=0).key == "keep_last"
    assert error_of(CheckpointConfig, every_env_steps=0).message == "must be >= 1 (got 0)"
    assert Config().checkpoint == CheckpointConfig()
    file = tmp_path / "c.yaml"
    file.write_text("checkpoint:\n  keep_last: 5\n  save_replay: false\n")
    assert load_config(file).checkpoint == CheckpointConfig(keep_last=5, save_replay=False)
    file.write_text("checkpoint:\n  keep_lst: 5\n")
    with pytest.raises(ConfigError, match="checkpoint.keep_lst"):
        load_config(file)
