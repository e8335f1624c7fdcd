"""Inspect and list checkpoints: ``python -m cluster.checkpoints inspect PATH | list RUN_DIR``.

Read-only: never cleans, prunes or rewrites anything (a run may be writing).
Exit status: 0 fine, 1 the inspected checkpoint fails verification (an intact emergency
checkpoint holding non-finite evidence counts as fine), 2 bad path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from learner.checkpoint_io import MANIFEST, POINTER, list_entries, parse_name, read_manifest, read_pointer, verify_dir
from learner.checkpoint_read import find_latest_good


class BadPath(Exception):
    """The path given on the command line is not what the command needs."""


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _scalar(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _summary(value: Any) -> str:
    """One line for a meta value: ``k=v`` pairs for a mapping, comma-joined items for a list."""
    if isinstance(value, dict):
        return "  ".join(f"{k}={_summary(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(_summary(v) for v in value) or "(none)"
    return _scalar(value)


def _emergency_state(manifest: dict[str, Any]) -> str:
    """An emergency checkpoint's verdict: its state (what a rollback restored) is finite or not; its evidence
    (the offending batch, the bad update's statistics) may hold NaN by design."""
    state_finite = (manifest.get("finite_detail") or {}).get("state")
    return "state finite" if state_finite else "state NON-FINITE"


def _status(path: Path, kind: str) -> str:
    result = verify_dir(path)
    if result.ok:
        return "ok"
    if not result.intact:
        return f"INVALID: {result.reason}"
    if kind == "emergency":
        return f"intact, {_emergency_state(read_manifest(path))} (evidence, never resumed)"
    return "intact, non-finite"


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    # Metrics summary and remedies first (what the operator looks for), then anything else.
    keys = [k for k in ("metrics", "remedies") if k in meta] + [k for k in meta if k not in ("metrics", "remedies")]
    return [f"{key:<12}{_summary(meta[key])}" for key in keys]


def inspect_checkpoint(path: Path, out: list[str]) -> int:
    if not path.is_dir():
        raise BadPath(f"{path}: no such checkpoint directory")
    if not (path / MANIFEST).exists() and parse_name(path.name) is None:
        raise BadPath(f"{path}: not a checkpoint directory (no {MANIFEST}); use `list` for a run directory")
    result = verify_dir(path)
    out.append(f"checkpoint  {path}")
    out.append(f"step        {result.step}")
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError):
        out.append(f"valid       NO: {result.reason}")
        return 1
    evidence = manifest.get("kind") == "emergency" and result.intact
    if result.ok:
        out.append("valid       yes")
    elif evidence:
        out.append(f"valid       intact emergency checkpoint, {_emergency_state(manifest)}; evidence, never resumed")
    else:
        out.append(f"valid       NO: {result.reason}")
    pointer, _ = read_pointer(path.parent)
    out.append(f"kind        {manifest.get('kind', 'regular')}")
    out.append(f"last good   {'yes' if pointer and pointer['path'] == path.name else 'no'}")
    out.append(f"config hash {manifest.get('config_hash', '?')}")
    out.append(f"created     {manifest.get('created_utc', '?')}")
    out.append(f"finite      {manifest.get('finite')}  {_summary(manifest.get('finite_detail', {}))}")
    for fname, entry in sorted(manifest.get("files", {}).items()):
        if isinstance(entry, dict):
            out.append(
                f"file        {fname:<14}{_size(int(entry.get('size', 0))):>12}  sha256 {entry.get('sha256', '?')}"
            )
    for line in _meta_lines(manifest.get("meta") or {}):
        out.append(line)
    return 0 if result.ok or evidence else 1


def _checkpoint_root(path: Path) -> Path:
    if not path.is_dir():
        raise BadPath(f"{path}: no such directory")
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if (path / POINTER).exists() or list_entries(path) or path.name == "checkpoints":
        return path
    raise BadPath(f"{path}: neither a run directory (with checkpoints/) nor a checkpoint directory")


def list_checkpoints(path: Path, out: list[str]) -> int:
    root = _checkpoint_root(path)
    entries = list_entries(root)
    out.append(f"checkpoints in {root}")
    if not entries:
        out.append("  (none yet)")
        return 0
    good = find_latest_good(root)
    out.append(f"  {'step':>12}  {'name':<28}{'kind':<11}status")
    for entry in sorted(entries, key=lambda e: (-e.step, e.name)):
        mark = "*" if good == entry.path else " "
        out.append(f"{mark} {entry.step:>12}  {entry.name:<28}{entry.kind:<11}{_status(entry.path, entry.kind)}")
    pointer, problem = read_pointer(root)
    if good is None:
        out.append("last good: none verifies")
    elif pointer is None:
        out.append(f"last good (*): {good.name} ({problem or 'no ' + POINTER}; resume would use it)")
    elif root / pointer["path"] != good:
        out.append(f"last good (*): {good.name} ({POINTER} names {pointer['path']}, which does not verify)")
    else:
        out.append(f"last good (*): {good.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.checkpoints", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect", help="step, validity, config hash, files, metrics summary, remedies").add_argument(
        "path", type=Path
    )
    sub.add_parser("list", help="all checkpoints of a run, last good marked *").add_argument("path", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    out: list[str] = []
    try:
        command = inspect_checkpoint if args.command == "inspect" else list_checkpoints
        status = command(args.path, out)
    except BadPath as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    sys.stdout.write("".join(line + "\n" for line in out))
    return status


if __name__ == "__main__":
    sys.exit(main())
