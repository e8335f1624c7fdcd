"""Low-level pieces of the checkpointer: durable writes, hashing, names, verification.

Nothing here decides policy (what becomes ``last_good``, what is pruned); that
is ``learner.checkpoint.Checkpointer``. These functions only read or write one
file or directory, so the CLI can use them without touching a run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

MANIFEST = "manifest.json"
STATE_FILE = "state.pt"
REPLAY_FILE = "replay.pt"
EXTRA_FILE = "extra.pt"
POINTER = "last_good.json"
TMP_PREFIX = ".tmp_"
FORMAT_VERSION = 2
"""Manifest format; 2 since the single SAC (its state in layout ``SAC_LAYOUT``). Format-1 checkpoints still load."""
SAC_LAYOUT = 2
"""Layout of the SAC state in ``state.pt``: 2 = stacked twin critics; 1 = separate ``q1``/``q2`` networks."""

CRASH_ENV = "DMSAC_CHECKPOINT_CRASH_AT"
"""Environment variable naming a write phase at which the process dies (crash tests)."""
CRASH_EXIT_CODE = 17
PHASES = ("mid_file", "before_manifest", "before_rename", "before_pointer_swap")
"""Named moments of a checkpoint write at which the fault hook is called."""

_NAME = re.compile(r"^(?P<kind>step|emergency_step)_(?P<step>\d{9,})(?:_(?P<n>\d+))?$")
_CHUNK = 4 << 20
# Leaf types that torch.load(weights_only=True) accepts without extra allow-listing.
_SAFE_LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


def env_fault_hook(phase: str) -> None:
    """Default fault hook: die with ``CRASH_EXIT_CODE`` when ``$DMSAC_CHECKPOINT_CRASH_AT`` names ``phase``."""
    if os.environ.get(CRASH_ENV) == phase:
        os._exit(CRASH_EXIT_CODE)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only stream that hashes and counts what it passes on (torch.save streams, never seeks)."""

    def __init__(self, file: BinaryIO, on_first_write: Callable[[], None] | None) -> None:
        self._file = file
        self._hash = hashlib.sha256()
        self.size = 0
        self._on_first_write = on_first_write

    def write(self, data: bytes | memoryview) -> int:
        written = self._file.write(data)
        self._hash.update(data)
        self.size += memoryview(data).nbytes
        if self._on_first_write is not None:
            hook, self._on_first_write = self._on_first_write, None
            self._file.flush()  # so a crash here really leaves a partial file on disk
            hook()
        return written

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def save_tensor_file(path: Path, obj: Any, on_first_write: Callable[[], None] | None = None) -> dict[str, Any]:
    """``torch.save`` ``obj`` to ``path``, fsync it; return its manifest entry ``{size, sha256}``."""
    with open(path, "wb") as file:
        writer = _HashingWriter(file, on_first_write)
        torch.save(obj, writer)  # type: ignore[arg-type]
        file.flush()
        os.fsync(file.fileno())
    on_disk = path.stat().st_size
    if on_disk != writer.size:
        raise OSError(f"{path}: wrote {writer.size} bytes but the file holds {on_disk}")
    return {"size": writer.size, "sha256": writer.hexdigest()}


def write_json_durable(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON and fsync the file (not its directory)."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (list, tuple)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


def tree_is_finite(tree: Any) -> bool:
    """True when every floating/complex tensor and every Python float in ``tree`` is finite.

    One host sync per device: the per-tensor flags are reduced on their device first.
    """
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for leaf in _leaves(tree):
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            flags.setdefault(leaf.device, []).append(torch.isfinite(leaf.detach()).all())
        elif isinstance(leaf, (float, complex)) and not math.isfinite(abs(leaf)):
            return False
    return all(bool(torch.stack(group).all()) for group in flags.values())


def check_loadable_types(tree: Any, where: str) -> None:
    """Raise ``TypeError`` naming the key path of the first value ``weights_only`` loading would refuse."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} must be a str or int")
            check_loadable_types(value, f"{where}.{key}")
    elif isinstance(tree, (list, tuple)) and not isinstance(tree, torch.Size):
        for index, value in enumerate(tree):
            check_loadable_types(value, f"{where}[{index}]")
    elif not isinstance(tree, (torch.Tensor, *_SAFE_LEAVES)):
        raise TypeError(
            f"{where}: {type(tree).__module__}.{type(tree).__qualname__} cannot be loaded with weights_only=True; "
            "store tensors, numbers, strings, lists and dicts only (e.g. torch.from_numpy for arrays)"
        )


def regular_name(step: int) -> str:
    return f"step_{step:09d}"


def emergency_name(step: int, n: int = 0) -> str:
    return f"emergency_step_{step:09d}" + (f"_{n}" if n else "")


@dataclass(frozen=True)
class Entry:
    """A directory under the checkpoint root whose name is a checkpoint name."""

    path: Path
    kind: str
    """``regular`` or ``emergency``."""
    step: int

    @property
    def name(self) -> str:
        return self.path.name


def parse_name(name: str) -> tuple[str, int] | None:
    """``("regular" | "emergency", step)`` for a checkpoint directory name, else None."""
    match = _NAME.match(name)
    if match is None:
        return None
    kind = "regular" if match["kind"] == "step" else "emergency"
    return kind, int(match["step"])


def list_entries(root: Path) -> list[Entry]:
    """Every checkpoint-named directory under ``root``, ordered by step then name."""
    if not root.is_dir():
        return []
    entries = []
    for child in root.iterdir():
        parsed = parse_name(child.name)
        if parsed is not None and child.is_dir():
            entries.append(Entry(child, parsed[0], parsed[1]))
    return sorted(entries, key=lambda e: (e.step, e.name))


@dataclass(frozen=True)
class VerifyResult:
    """What verifying one checkpoint directory found."""

    ok: bool
    """Intact and finite: fit to resume from or to be named by ``last_good``."""
    reason: str
    """Why not (empty when ``ok``)."""
    step: int | None
    """The step the manifest (or, lacking one, the directory name) records."""
    intact: bool = False
    """Every file listed, present, of the recorded size and sha256 (finiteness aside)."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of checkpoint directory ``path`` (raises OSError / ValueError)."""
    data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    return data


def _manifest_problem(manifest: dict[str, Any], name: str) -> str:
    for key, kind in (("step", int), ("files", dict), ("finite", bool), ("config_hash", str)):
        if not isinstance(manifest.get(key), kind):
            return f"manifest field {key!r} missing or not a {kind.__name__}"
    parsed = parse_name(name)
    if parsed is not None and parsed[1] != manifest["step"]:
        return f"manifest step {manifest['step']} does not match directory name {name}"
    if STATE_FILE not in manifest["files"]:
        return f"manifest lists no {STATE_FILE}"
    return ""


def _file_problem(path: Path, fname: str, entry: Any) -> str:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("size"), int)
        or not isinstance(entry.get("sha256"), str)
    ):
        return f"manifest entry for {fname} is malformed"
    if os.sep in fname or fname.startswith("."):
        return f"manifest names a file outside the checkpoint: {fname!r}"
    file = path / fname
    if not file.is_file():
        return f"missing file {fname}"
    size = file.stat().st_size
    if size != entry["size"]:
        return f"size mismatch in {fname}: {size} bytes on disk, manifest says {entry['size']}"
    digest = sha256_file(file)
    if digest != entry["sha256"]:
        return f"sha256 mismatch in {fname}: {digest[:12]}… on disk, manifest says {entry['sha256'][:12]}…"
    return ""


def verify_dir(path: Path) -> VerifyResult:
    """Check a checkpoint directory: manifest, every file's presence, size and sha256, finiteness."""
    parsed = parse_name(path.name)
    name_step = parsed[1] if parsed else None
    if not path.is_dir():
        return VerifyResult(False, f"not a directory: {path}", name_step)
    try:
        manifest = read_manifest(path)
    except FileNotFoundError:
        return VerifyResult(False, f"missing {MANIFEST} (incomplete checkpoint)", name_step)
    except (OSError, ValueError) as err:
        return VerifyResult(False, f"unreadable {MANIFEST}: {err}", name_step)
    problem = _manifest_problem(manifest, path.name)
    if problem:
        return VerifyResult(False, problem, name_step)
    step = manifest["step"]
    for fname, entry in sorted(manifest["files"].items()):
        problem = _file_problem(path, fname, entry)
        if problem:
            return VerifyResult(False, problem, step)
    if not manifest["finite"]:
        return VerifyResult(False, "manifest records non-finite values (finite: false)", step, intact=True)
    return VerifyResult(True, "", step, intact=True)


def read_pointer(root: Path) -> tuple[dict[str, Any] | None, str]:
    """``(pointer, problem)``: the parsed ``last_good.json``, or None and why not ("" if absent)."""
    file = root / POINTER
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as err:
        return None, f"{POINTER} is unreadable: {err}"
    if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(data.get("step"), int):
        return None, f"{POINTER} is malformed: {data!r}"
    if parse_name(data["path"]) != ("regular", data["step"]):
        return None, f"{POINTER} names {data['path']!r}, which is not step_{data['step']:09d}"
    return data, ""
