"""Reading checkpoints: finding the last good one, resolving ``--resume``, safe loading, the layout-1 upgrade."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from learner.checkpoint import Checkpointer
from learner.checkpoint_io import (
    MANIFEST,
    POINTER,
    STATE_FILE,
    save_tensor_file,
    sha256_file,
    verify_dir,
    write_json_durable,
)
from learner.checkpoint_read import (
    CheckpointCorruptError,
    CheckpointError,
    NoGoodCheckpointError,
    NonFiniteCheckpointError,
    find_latest_good,
    load_checkpoint,
    resolve_resume,
    upgrade_sac_state,
)
from learner.sac import SAC
from learner.types import UpdateStats
from tests.learner.helpers import (
    DIMS,
    assert_bitwise,
    flip_byte,
    make_replay,
    make_state,
    random_rows,
    with_config,
)

LOGGER = "learner.checkpoint"
CPU = torch.device("cpu")
V1 = Path(__file__).parent / "data" / "sac_layout_v1.pt"
"""A layout-1 SAC state (8x8 networks, 3 updates) written by the code before the single SAC, with the Q values
of its critics and the actions of its policy on a probe batch."""


@pytest.fixture
def ckpt(tmp_path: Path) -> Checkpointer:
    return Checkpointer(tmp_path / "checkpoints", keep_last=3)


def named(vector: torch.Tensor) -> UpdateStats:
    return UpdateStats.from_vector(vector.tolist(), 1)


def write_by_hand(path: Path, state: dict, **manifest) -> Path:
    """A checkpoint directory whose manifest says what the test wants (checksums right)."""
    path.mkdir(parents=True)
    files = {STATE_FILE: save_tensor_file(path / STATE_FILE, state)}
    write_json_durable(path / MANIFEST, {"step": 1, "files": files, "finite": True, "config_hash": "h", **manifest})
    return path


def test_flipped_byte_fails_sha256_and_previous_good_is_used(
    ckpt: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    good = ckpt.save(100, make_state(1), make_replay(), "h", {})
    newest = ckpt.save(200, make_state(2), make_replay(), "h", {})
    flip_byte(newest / "state.pt", 200)
    result = ckpt.verify(newest)
    assert (result.ok, result.intact, result.step) == (False, False, 200)
    assert "sha256 mismatch in state.pt" in result.reason
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ckpt.latest_good() == good
    assert "step_000000200" in caplog.text and "sha256 mismatch" in caplog.text
    assert ckpt.resolve("auto") == good
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ckpt.resolve(str(newest)) == good
    assert "sha256 mismatch" in caplog.text and str(good) in caplog.text
    assert_bitwise(make_state(1), ckpt.load(ckpt.resolve("auto")).state)
    with pytest.raises(CheckpointCorruptError, match="sha256"):
        ckpt.load(newest)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_only_loading_rejects_a_pickled_object(ckpt: Checkpointer, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = ckpt.root / "step_000000001"
    path.mkdir(parents=True)
    torch.save({"w": torch.ones(2), "evil": _Exploit(marker)}, path / "state.pt")
    files = {"state.pt": {"size": (path / "state.pt").stat().st_size, "sha256": sha256_file(path / "state.pt")}}
    write_json_durable(path / "manifest.json", {"step": 1, "files": files, "finite": True, "config_hash": "h"})
    assert verify_dir(path).ok  # the checksums are right: only weights_only stands in the way
    with pytest.raises(CheckpointCorruptError, match="weights_only"):
        ckpt.load(path)
    assert not marker.exists()


def test_latest_good_with_garbage_pointer_falls_back(ckpt: Checkpointer, caplog: pytest.LogCaptureFixture) -> None:
    ckpt.save(100, make_state(), None, "h", {})
    ckpt.save(200, make_state(), None, "h", {})
    (ckpt.root / POINTER).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ckpt.latest_good() == ckpt.root / "step_000000200"
    assert "unreadable" in caplog.text


def test_resolve_errors_and_run_dir(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", keep_last=2)
    with pytest.raises(NoGoodCheckpointError, match="no checkpoint under"):
        ckpt.resolve("auto")
    with pytest.raises(NoGoodCheckpointError, match="no such directory"):
        ckpt.resolve(str(tmp_path / "nope"))
    path = ckpt.save(100, make_state(), None, "h", {})
    assert ckpt.resolve(str(path)) == path
    assert ckpt.resolve("step_000000100") == path
    assert ckpt.resolve(str(tmp_path / "run")) == path
    flip_byte(path / "state.pt", 50)
    with pytest.raises(NoGoodCheckpointError, match="sha256 mismatch"):
        ckpt.resolve(str(path))


def test_a_broken_pointer_target_falls_back_to_older_checkpoints_before_newer_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resumed from 200 after 300 was written: the pointer names 200; if 200 breaks, 100 comes before 300."""
    ckpt = Checkpointer(tmp_path, keep_last=5)
    for step in (100, 300, 200):
        ckpt.save(step, make_state(), None, "h", {})
    assert find_latest_good(tmp_path) == tmp_path / "step_000000200"
    flip_byte(tmp_path / "step_000000200" / "state.pt", 100)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert find_latest_good(tmp_path) == tmp_path / "step_000000100"
    assert "names step_000000200, which fails verification" in caplog.text
    flip_byte(tmp_path / "step_000000100" / "state.pt", 100)
    assert find_latest_good(tmp_path) == tmp_path / "step_000000300"
    flip_byte(tmp_path / "step_000000300" / "state.pt", 100)
    assert find_latest_good(tmp_path) is None


def test_without_a_pointer_the_newest_verifying_checkpoint_is_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert find_latest_good(tmp_path / "absent") is None
    ckpt = Checkpointer(tmp_path, keep_last=5)
    for step in (100, 200):
        ckpt.save(step, make_state(), None, "h", {})
    (tmp_path / POINTER).unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert find_latest_good(tmp_path) == tmp_path / "step_000000200"
    assert "holds checkpoints but no last_good.json" in caplog.text


def test_resume_from_a_damaged_path_takes_the_newest_older_good_one_never_a_newer(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=5)
    for step in (100, 200, 300):
        ckpt.save(step, make_state(), None, "h", {})
    flip_byte(tmp_path / "step_000000200" / "state.pt", 100)
    assert resolve_resume(str(tmp_path / "step_000000200"), tmp_path / "elsewhere") == tmp_path / "step_000000100"


def test_a_regular_checkpoint_with_non_finite_values_is_refused_on_load_whatever_its_manifest_says(
    tmp_path: Path,
) -> None:
    state = {"w": torch.tensor([1.0, float("nan")])}
    regular = write_by_hand(tmp_path / "step_000000001", state)
    assert verify_dir(regular).ok  # the manifest claims finite values and the checksums agree
    with pytest.raises(CheckpointCorruptError, match="not finite although the manifest says so"):
        load_checkpoint(regular)
    emergency = write_by_hand(tmp_path / "emergency_step_000000001", state, kind="emergency")
    loaded = load_checkpoint(emergency)  # an emergency checkpoint may hold the non-finite evidence
    assert torch.isnan(loaded.state["w"][1]) and loaded.replay is None and loaded.extra is None


def test_every_checkpoint_error_is_a_checkpoint_error() -> None:
    for error in (NonFiniteCheckpointError, CheckpointCorruptError, NoGoodCheckpointError):
        assert issubclass(error, CheckpointError)


def test_a_layout_1_checkpoint_converts_to_the_same_networks_and_moments():
    saved = torch.load(V1, weights_only=True)
    config = with_config(hidden_sizes=(8, 8), **{k: v for k, v in saved["config"].items() if k != "hidden_sizes"})
    sac = SAC(DIMS.policy_in, DIMS.action_dim, config, CPU, seed=0)
    with pytest.raises(ValueError, match="layout 1: upgrade it"):
        sac.load_state_dict(saved["sac"])
    sac.load_state_dict(upgrade_sac_state(saved["sac"]))
    probe = saved["probe"]
    x = torch.cat([probe["obs"], probe["context"]], -1)
    with torch.no_grad():
        assert torch.allclose(sac.critic(x, probe["action"]), saved["q"], atol=1e-6)
        assert torch.allclose(sac.critic_target(x, probe["action"]), saved["target_q"], atol=1e-6)
        # close, not equal: the fixture was written on another CPU (its kernels round differently)
        assert torch.allclose(sac.actor.deterministic(x), saved["action"], atol=1e-6)
    moments = saved["sac"]["critic_optimizer"]["state"]
    critic_adam = sac.adam("critic")  # the networks' shapes (the stack pads the first layer)
    assert torch.equal(critic_adam.exp_avgs[0], torch.stack([moments[0]["exp_avg"], moments[6]["exp_avg"]]))
    assert float(critic_adam.step) == 3.0 and sac.updates_done == 3
    assert upgrade_sac_state(sac.state_dict())["layout"] == 2  # a layout-2 state passes through
    assert named(sac.update(random_rows(seed=1))).finite  # and it trains on
