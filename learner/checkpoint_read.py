"""Reading checkpoints: errors, finding the last good one, resolving ``--resume``, safe loading.

Used by ``learner.checkpoint.Checkpointer`` and by the read-only CLI
(``python -m cluster.checkpoints``); nothing here writes or deletes.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learner.checkpoint_io import (
    EXTRA_FILE,
    MANIFEST,
    POINTER,
    REPLAY_FILE,
    SAC_LAYOUT,
    STATE_FILE,
    Entry,
    list_entries,
    parse_name,
    read_manifest,
    read_pointer,
    tree_is_finite,
    verify_dir,
)

# One logger name for everything the checkpointer reports.
log = logging.getLogger("learner.checkpoint")


class CheckpointError(Exception):
    """A checkpoint could not be written, found or loaded."""


class NonFiniteCheckpointError(CheckpointError):
    """A regular checkpoint was refused because its state holds a NaN or an infinity."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint failed verification or safe loading."""


class NoGoodCheckpointError(CheckpointError):
    """``--resume`` found no checkpoint that verifies."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint, loaded with ``weights_only=True``."""

    path: Path
    state: dict
    replay: dict | None
    manifest: dict
    extra: dict | None = None
    """Emergency checkpoints only: offending batch, recent stats, context statistics."""


def _first_verifying(entries: list[Entry], why: str) -> Path | None:
    for entry in entries:
        result = verify_dir(entry.path)
        if result.ok:
            log.warning("%s: using %s (step %d)", why, entry.path, entry.step)
            return entry.path
        log.warning("%s: skipping %s: %s", why, entry.name, result.reason)
    return None


def find_latest_good(root: Path) -> Path | None:
    """The checkpoint ``last_good.json`` names if it verifies, else the newest older one that does.

    Every fallback is logged with the reason; None only when no regular checkpoint verifies.
    """
    regular = [e for e in list_entries(root) if e.kind == "regular"]
    pointer, problem = read_pointer(root)
    below: int | None = None
    if pointer is not None:
        target = root / pointer["path"]
        result = verify_dir(target)
        if result.ok:
            return target
        log.warning("%s names %s, which fails verification: %s", root / POINTER, pointer["path"], result.reason)
        below = pointer["step"]
        regular = [e for e in regular if e.path != target]
    elif problem:
        log.warning("%s: %s", root, problem)
    elif regular:
        log.warning("%s holds checkpoints but no %s", root, POINTER)
    # Older than the broken pointer first (newest first), then anything newer.
    ordered = sorted(regular, key=lambda e: (below is not None and e.step >= below, -e.step))
    found = _first_verifying(ordered, "falling back")
    if found is None and regular:
        log.error("no checkpoint under %s verifies (%d examined)", root, len(regular))
    return found


def is_checkpoint_root(path: Path) -> bool:
    if parse_name(path.name) is not None or (path / MANIFEST).exists():
        return False
    return (path / POINTER).exists() or bool(list_entries(path))


def last_good_under(path: Path) -> Path | None:
    """The last good checkpoint of a run directory or a checkpoint directory; None when ``path`` is neither
    (a single checkpoint, say). ``NoGoodCheckpointError`` when it is one but nothing in it verifies."""
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir() and is_checkpoint_root(candidate):
            return resolve_resume("auto", candidate)
    return None


def resolve_resume(spec: str, root: Path) -> Path:
    """The checkpoint to resume from for ``--resume auto|PATH`` (PATH: a checkpoint, checkpoint or run dir)."""
    if spec == "auto":
        found = find_latest_good(root)
        if found is None:
            count = len(list_entries(root))
            raise NoGoodCheckpointError(
                f"--resume auto: no checkpoint under {root} verifies ({count} checkpoint directories present)"
            )
        return found
    path = Path(spec).expanduser()
    if not path.exists() and (root / spec).exists():
        path = root / spec
    if not path.exists():
        raise NoGoodCheckpointError(f"--resume {spec}: no such directory")
    found = last_good_under(path)
    if found is not None:
        return found
    result = verify_dir(path)
    if result.ok:
        return path
    log.warning("--resume %s: %s; looking for the previous good checkpoint in %s", spec, result.reason, path.parent)
    older = [e for e in list_entries(path.parent) if e.kind == "regular" and e.path != path]
    older = [e for e in older if result.step is None or e.step < result.step]
    found = _first_verifying(sorted(older, key=lambda e: -e.step), f"--resume {spec} instead")
    if found is None:
        raise NoGoodCheckpointError(
            f"--resume {spec}: {result.reason}, and no older checkpoint in {path.parent} verifies"
        )
    return found


def _safe_load(file: Path, map_location: Any) -> Any:
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointCorruptError(f"{file}: refused by weights_only loading: {err}") from err


def load_checkpoint(path: Path, map_location: Any = "cpu") -> LoadedCheckpoint:
    """Verify ``path`` and load it with ``torch.load(weights_only=True)``.

    Regular checkpoints must verify fully and hold finite values; an emergency
    checkpoint only needs to be intact (it may hold the non-finite evidence).
    """
    path = Path(path)
    result = verify_dir(path)
    if not result.intact:
        raise CheckpointCorruptError(f"{path}: {result.reason}")
    manifest = read_manifest(path)
    regular = manifest.get("kind", "regular") == "regular"
    if regular and not result.ok:
        raise CheckpointCorruptError(f"{path}: {result.reason}")
    files = manifest["files"]
    state = _safe_load(path / STATE_FILE, map_location)
    replay = _safe_load(path / REPLAY_FILE, map_location) if REPLAY_FILE in files else None
    extra = _safe_load(path / EXTRA_FILE, map_location) if EXTRA_FILE in files else None
    if regular and not (tree_is_finite(state) and tree_is_finite(replay)):
        raise CheckpointCorruptError(f"{path}: loaded values are not finite although the manifest says so")
    if isinstance(state, dict) and "sac" in state.get("learner", {}):
        state["learner"]["sac"] = upgrade_sac_state(state["learner"]["sac"])
    return LoadedCheckpoint(path, state, replay, manifest, extra)


def upgrade_sac_state(state: dict) -> dict:
    """The one conversion of old checkpoints: a layout-1 SAC state (checkpoint format 1: critics ``q1.*``/``q2.*``
    and their optimizer's per-network moments) in layout 2 (stacked ``weights.l``/``biases.l`` and moments)."""
    if state.get("layout", 1) == SAC_LAYOUT:
        return state

    def stacked(critic: dict) -> dict:
        linears = sorted({int(key.split(".")[1]) for key in critic if key.startswith("q1.")})  # Sequential indices
        return {f"{group}.{layer}": torch.stack([critic[f"q{n}.{index}.{kind}"] for n in (1, 2)])
                for layer, index in enumerate(linears) for kind, group in (("weight", "weights"), ("bias", "biases"))}  # fmt: skip

    moments = state["critic_optimizer"]["state"]
    per_network = len(moments) // 2  # layout 1 listed q1's parameters, then q2's
    critic_moments = {
        j: {"step": moments[j]["step"], **{m: torch.stack([moments[j][m], moments[j + per_network][m]])
                                           for m in ("exp_avg", "exp_avg_sq")}}
        for j in range(per_network) if j in moments
    }  # fmt: skip
    return {
        **state, "layout": SAC_LAYOUT, "critic": stacked(state["critic"]), "critic_target": stacked(state["critic_target"]),
        "critic_optimizer": {"state": critic_moments},
    }  # fmt: skip
