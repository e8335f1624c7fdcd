"""Atomic checkpoints with a manifest and a ``last_good`` pointer (promises 5, 6 and 8).

A checkpoint is written into ``<root>/.tmp_<name>_<pid>/``, every file fsynced,
then ``manifest.json`` (sizes, sha256, step, config hash, finiteness, caller's
``meta``), the directory fsynced and renamed into place, re-verified from disk,
and only then named by ``last_good.json`` (replaced atomically). A crash at any
moment leaves the previous ``last_good`` untouched and loadable.

Layout::

    <root>/step_000010000/{state.pt, replay.pt, manifest.json}
    <root>/emergency_step_000012345/{state.pt, extra.pt, manifest.json}
    <root>/last_good.json      {"step": 10000, "path": "step_000010000"}
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from learner.checkpoint_io import (
    EXTRA_FILE,
    FORMAT_VERSION,
    MANIFEST,
    POINTER,
    REPLAY_FILE,
    STATE_FILE,
    TMP_PREFIX,
    Entry,
    VerifyResult,
    check_loadable_types,
    emergency_name,
    env_fault_hook,
    fsync_dir,
    list_entries,
    read_manifest,
    read_pointer,
    regular_name,
    save_tensor_file,
    tree_is_finite,
    verify_dir,
    write_json_durable,
)
from learner.checkpoint_read import (
    CheckpointCorruptError,
    CheckpointError,
    LoadedCheckpoint,
    NoGoodCheckpointError,
    NonFiniteCheckpointError,
    find_latest_good,
    load_checkpoint,
    resolve_resume,
)
from learner.types import config_section

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointConfig",
    "CheckpointCorruptError",
    "CheckpointError",
    "Checkpointer",
    "LoadedCheckpoint",
    "NoGoodCheckpointError",
    "NonFiniteCheckpointError",
    "VerifyResult",
    "checkpoint_root",
    "find_latest_good",
    "load_checkpoint",
    "resolve_resume",
]


@config_section
class CheckpointConfig:
    """When and where the learner checkpoints, and how many it keeps."""

    every_env_steps: int = Field(50_000, ge=1)
    """Environment steps between regular checkpoints."""
    keep_last: int = Field(3, ge=1)
    """Regular checkpoints kept (newest first); the one ``last_good`` names and emergency ones are never pruned."""
    save_replay: bool = True
    """Include the replay buffer, so a resume continues on the same data (exact resume)."""
    dir: str = ""
    """Checkpoint directory; empty means ``<train.run_dir>/checkpoints``."""


def checkpoint_root(config: CheckpointConfig, run_dir: str | Path) -> Path:
    """The checkpoint directory ``config`` names for a run in ``run_dir``."""
    return Path(config.dir) if config.dir else Path(run_dir) / "checkpoints"


def _json_meta(meta: dict | None) -> dict:
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint meta must be JSON-serializable: {err}") from None
    return meta


def _created(entry: Entry) -> float:
    try:
        return float(read_manifest(entry.path)["created_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        return entry.path.stat().st_mtime


class Checkpointer:
    """Writes, verifies, prunes and finds checkpoints under one root directory.

    ``fault_hook(phase)`` is called at each of ``checkpoint_io.PHASES``; the
    default dies with exit code 17 when ``$DMSAC_CHECKPOINT_CRASH_AT`` names the
    phase (crash tests run a real subprocess). ``finite_check`` replaces the
    default finiteness test of state and replay trees.
    """

    def __init__(
        self,
        root: Path,
        keep_last: int,
        finite_check: Callable[[dict], bool] | None = None,
        fault_hook: Callable[[str], None] | None = None,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last
        self._finite = finite_check or tree_is_finite
        self.fault_hook = fault_hook or env_fault_hook
        """Called at each of ``checkpoint_io.PHASES`` of a write (crash tests replace it)."""

    # -- writing -----------------------------------------------------------------------------

    def save(self, step: int, state: dict, replay: dict | None, config_hash: str, meta: dict | None) -> Path:
        """Write a regular checkpoint and make it ``last_good`` once it verifies from disk.

        Raises ``NonFiniteCheckpointError`` (nothing written) if state or replay holds a
        non-finite value, ``CheckpointCorruptError`` if the written copy fails verification.
        """
        self._check_step(step)
        meta = _json_meta(meta)
        check_loadable_types(state, "state")
        detail = {"state": bool(self._finite(state))}
        if replay is not None:
            check_loadable_types(replay, "replay")
            detail["replay"] = bool(self._finite(replay))
        if not all(detail.values()):
            bad = ", ".join(k for k, v in detail.items() if not v)
            raise NonFiniteCheckpointError(f"step {step}: refusing a checkpoint with non-finite values in {bad}")
        name = regular_name(step)
        final = self.root / name
        if final.exists():
            if self._pointer_name() == name and verify_dir(final).ok:
                log.info("checkpoint %s already exists and is last_good; not rewriting it", final)
                return final
            log.warning("replacing existing checkpoint %s (not last_good or not verifying)", final)
            self._remove(final)
        payload = {STATE_FILE: state} | ({REPLAY_FILE: replay} if replay is not None else {})
        final = self._write_dir(name, payload, self._manifest("regular", step, config_hash, detail, meta))
        result = verify_dir(final)
        if not result.ok:
            raise CheckpointCorruptError(f"{final} failed verification after writing: {result.reason}")
        self.fault_hook("before_pointer_swap")
        self._swap_pointer(step, name)
        self.prune()
        return final

    def save_emergency(
        self, step: int, state: dict, extra: dict, *, config_hash: str = "", meta: dict | None = None
    ) -> Path:
        """Write ``emergency_step_<step>`` (may hold non-finite values; never pruned, never last_good)."""
        self._check_step(step)
        meta = _json_meta(meta)
        check_loadable_types(state, "state")
        check_loadable_types(extra, "extra")
        detail = {"state": bool(self._finite(state)), "extra": bool(tree_is_finite(extra))}
        n = 0
        while (self.root / emergency_name(step, n)).exists():
            n += 1
        manifest = self._manifest("emergency", step, config_hash, detail, meta)
        path = self._write_dir(emergency_name(step, n), {STATE_FILE: state, EXTRA_FILE: extra}, manifest)
        log.warning("emergency checkpoint written: %s (finite: %s)", path, detail)
        return path

    def _write_dir(self, name: str, payload: dict[str, Any], manifest: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{name}_{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {}
        for index, (fname, obj) in enumerate(payload.items()):
            on_first = (lambda: self.fault_hook("mid_file")) if index == 0 else None
            files[fname] = save_tensor_file(tmp / fname, obj, on_first)
        self.fault_hook("before_manifest")
        write_json_durable(tmp / MANIFEST, manifest | {"files": files})
        fsync_dir(tmp)
        self.fault_hook("before_rename")
        final = self.root / name
        os.rename(tmp, final)
        fsync_dir(self.root)
        return final

    @staticmethod
    def _manifest(kind: str, step: int, config_hash: str, detail: dict[str, bool], meta: dict) -> dict[str, Any]:
        now = time.time()
        return {
            "format": FORMAT_VERSION,
            "kind": kind,
            "step": step,
            "config_hash": config_hash,
            "created_unix": now,
            "created_utc": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "finite": all(detail.values()),
            "finite_detail": detail,
            "meta": meta,
        }

    def _swap_pointer(self, step: int, name: str) -> None:
        tmp = self.root / f"{TMP_PREFIX}{POINTER}_{os.getpid()}"
        write_json_durable(tmp, {"step": step, "path": name})
        os.replace(tmp, self.root / POINTER)
        fsync_dir(self.root)

    @staticmethod
    def _check_step(step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")

    # -- housekeeping ------------------------------------------------------------------------

    def _pointer_name(self) -> str | None:
        pointer, _ = read_pointer(self.root)
        return pointer["path"] if pointer else None

    def _remove(self, path: Path) -> None:
        # Rename first: a crash mid-delete leaves a temporary, never a half-deleted checkpoint.
        aside = self.root / f"{TMP_PREFIX}removed_{path.name}_{os.getpid()}"
        os.rename(path, aside)
        fsync_dir(self.root)
        shutil.rmtree(aside)

    def prune(self) -> list[str]:
        """Keep the ``keep_last`` most recently written regular checkpoints plus ``last_good``; return removed names."""
        regular = [e for e in list_entries(self.root) if e.kind == "regular"]
        newest = sorted(regular, key=lambda e: (_created(e), e.step))[-self.keep_last :]
        keep = {e.name for e in newest} | {self._pointer_name()}
        removed = []
        for entry in regular:
            if entry.name not in keep:
                self._remove(entry.path)
                removed.append(entry.name)
        if removed:
            log.info("pruned checkpoints %s", ", ".join(removed))
        return removed

    def clean_temporaries(self) -> list[str]:
        """Remove leftover ``.tmp_*`` entries of interrupted writes (call at start); return their names."""
        if not self.root.is_dir():
            return []
        removed = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(TMP_PREFIX):
                log.warning("removing leftover temporary %s from an interrupted checkpoint write", child)
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
                removed.append(child.name)
        return removed

    # -- reading -----------------------------------------------------------------------------

    def verify(self, path: Path) -> VerifyResult:
        """Manifest present, every file present with its recorded size and sha256, values finite."""
        return verify_dir(Path(path))

    def latest_good(self) -> Path | None:
        """``last_good``'s target if it verifies, else the newest older checkpoint that does (logged)."""
        return find_latest_good(self.root)

    def resolve(self, spec: str) -> Path:
        """The checkpoint for ``--resume auto|PATH``; a failing PATH falls back to the previous good one."""
        return resolve_resume(spec, self.root)

    def load(self, path: Path, map_location: Any = "cpu") -> LoadedCheckpoint:
        """Verify and load ``path`` with ``weights_only=True``."""
        return load_checkpoint(Path(path), map_location)

    def entries(self) -> list[Entry]:
        """Every checkpoint directory under the root, by step."""
        return list_entries(self.root)
