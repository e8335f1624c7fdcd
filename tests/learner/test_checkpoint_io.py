"""Checkpoint files: durable hashed writes, names, entries, finiteness and loadability of trees, the pointer, verify."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.checkpoint import Checkpointer
from learner.checkpoint_io import (
    MANIFEST,
    POINTER,
    STATE_FILE,
    check_loadable_types,
    emergency_name,
    list_entries,
    parse_name,
    read_pointer,
    regular_name,
    save_tensor_file,
    sha256_file,
    tree_is_finite,
    verify_dir,
    write_json_durable,
)
from tests.learner.helpers import make_replay, make_state


@pytest.fixture
def ckpt(tmp_path: Path) -> Checkpointer:
    return Checkpointer(tmp_path / "checkpoints", keep_last=3)


def _drop_manifest(path: Path) -> None:
    (path / "manifest.json").unlink()


def _truncate_replay(path: Path) -> None:
    data = (path / "replay.pt").read_bytes()
    (path / "replay.pt").write_bytes(data[:-10])


def _drop_replay(path: Path) -> None:
    (path / "replay.pt").unlink()


def _edit_step(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["step"] = 7
    (path / "manifest.json").write_text(json.dumps(manifest))


def _claim_nonfinite(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["finite"] = False
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_drop_manifest, "missing manifest.json"),
        (_truncate_replay, "size mismatch in replay.pt"),
        (_drop_replay, "missing file replay.pt"),
        (_edit_step, "manifest step 7 does not match"),
        (_claim_nonfinite, "non-finite"),
    ],
)
def test_verify_names_what_is_wrong(ckpt: Checkpointer, damage, reason: str) -> None:
    path = ckpt.save(300, make_state(), make_replay(), "h", {})
    assert ckpt.verify(path).ok
    damage(path)
    result = ckpt.verify(path)
    assert not result.ok and reason in result.reason


def write_manifest(path: Path, **changes) -> None:
    """A one-file checkpoint at ``path`` whose manifest is the valid one with ``changes``."""
    path.mkdir(parents=True, exist_ok=True)
    files = {STATE_FILE: save_tensor_file(path / STATE_FILE, {"w": torch.ones(2)})}
    write_json_durable(path / MANIFEST, {"step": 5, "files": files, "finite": True, "config_hash": "h", **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"config_hash": None}, "manifest field 'config_hash' missing or not a str"),
        ({"step": "5"}, "manifest field 'step' missing or not a int"),
        ({"files": {}}, "manifest lists no state.pt"),
        ({"files": {STATE_FILE: {"size": 1}}}, "manifest entry for state.pt is malformed"),
        ({"files": {STATE_FILE: {"size": 1, "sha256": ""}, ".x": {"size": 1, "sha256": ""}}}, "outside the checkpoint"),
    ],
)
def test_verify_refuses_a_malformed_manifest(tmp_path: Path, changes: dict, reason: str) -> None:
    path = tmp_path / "step_000000005"
    write_manifest(path)
    assert verify_dir(path).ok
    write_manifest(path, **changes)
    result = verify_dir(path)
    assert (result.ok, result.intact, result.step) == (False, False, 5)  # an unusable step: the name's
    assert reason in result.reason


def test_verify_of_a_missing_directory_keeps_the_step_of_its_name(tmp_path: Path) -> None:
    result = verify_dir(tmp_path / "step_000000042")
    assert (result.ok, result.step) == (False, 42) and result.reason.startswith("not a directory")


def test_save_tensor_file_reports_the_bytes_it_wrote_and_calls_its_hook_once(tmp_path: Path) -> None:
    calls = []
    entry = save_tensor_file(tmp_path / "t.pt", {"x": torch.arange(1000.0)}, on_first_write=lambda: calls.append(1))
    data = (tmp_path / "t.pt").read_bytes()
    assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sha256_file(tmp_path / "t.pt") == entry["sha256"] and calls == [1]
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(1000.0))


def test_write_json_durable_writes_indented_json_and_a_final_newline(tmp_path: Path) -> None:
    write_json_durable(tmp_path / "p.json", {"step": 3, "path": "step_000000003"})
    text = (tmp_path / "p.json").read_text()
    assert text == '{\n  "step": 3,\n  "path": "step_000000003"\n}\n'


def test_names_round_trip_and_need_nine_digits() -> None:
    assert (regular_name(12), emergency_name(12), emergency_name(12, 2)) == (
        "step_000000012", "emergency_step_000000012", "emergency_step_000000012_2",
    )  # fmt: skip
    assert parse_name("step_000000012") == ("regular", 12)
    assert parse_name("emergency_step_000000012_2") == ("emergency", 12)
    assert parse_name("step_1234567890") == ("regular", 1_234_567_890)
    assert [parse_name(n) for n in ("step_12", "step_000000012.tmp", ".tmp_step_000000012_9", "last_good.json")] == [
        None, None, None, None,
    ]  # fmt: skip


def test_list_entries_holds_checkpoint_directories_by_step_then_name(tmp_path: Path) -> None:
    assert list_entries(tmp_path / "absent") == []
    for name in ("step_000000200", "emergency_step_000000100_1", "step_000000100", "emergency_step_000000100", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "step_000000300").write_text("a file, not a checkpoint")
    entries = list_entries(tmp_path)
    assert [(e.name, e.kind, e.step) for e in entries] == [
        ("emergency_step_000000100", "emergency", 100),
        ("emergency_step_000000100_1", "emergency", 100),
        ("step_000000100", "regular", 100),
        ("step_000000200", "regular", 200),
    ]


def test_tree_is_finite_looks_at_every_float_tensor_and_python_float() -> None:
    finite = {"a": [torch.ones(2), {"b": 1.5}], "c": (torch.tensor([7], dtype=torch.int64), "text", None)}
    assert tree_is_finite(finite) and tree_is_finite(None)
    assert not tree_is_finite({"a": [torch.ones(2), {"b": float("inf")}]})
    assert not tree_is_finite([torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)])
    assert not tree_is_finite({"z": complex(1.0, float("nan"))})
    assert not tree_is_finite({"z": torch.tensor([1 + 1j, complex(float("inf"), 0)])})
    assert not tree_is_finite({"numpy": np.float64("nan")})  # a float subclass


def test_check_loadable_types_names_the_path_of_the_first_refused_value() -> None:
    check_loadable_types({"a": [1, 2.0, "s", b"b", None, torch.Size([2]), torch.float32], 3: torch.ones(1)}, "state")
    with pytest.raises(TypeError, match=r"state\.a\[1\]\.b: numpy\.ndarray cannot be loaded"):
        check_loadable_types({"a": [0, {"b": np.zeros(2)}]}, "state")
    with pytest.raises(TypeError, match=r"state: key \(1, 2\) must be a str or int"):
        check_loadable_types({(1, 2): 0}, "state")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"step": 100, "path": "step_000000100"}', ""),
        ("{not json", "last_good.json is unreadable: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ('{"step": "100", "path": "step_000000100"}', "last_good.json is malformed: {'step': '100', 'path': 'step_000000100'}"),
        ('{"step": 100, "path": "step_000000200"}', "last_good.json names 'step_000000200', which is not step_000000100"),
        ('{"step": 100, "path": "emergency_step_000000100"}',
         "last_good.json names 'emergency_step_000000100', which is not step_000000100"),
    ],
)  # fmt: skip
def test_read_pointer_accepts_only_a_regular_name_of_its_own_step(tmp_path: Path, text: str, problem: str) -> None:
    assert read_pointer(tmp_path) == (None, "")  # absent: no problem
    (tmp_path / POINTER).write_text(text)
    assert read_pointer(tmp_path) == ((None, problem) if problem else (json.loads(text), ""))
