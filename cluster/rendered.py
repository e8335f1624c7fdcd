"""Writing (or checking) a file rendered from config: the shared tail of the render commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


class BlockDumper(yaml.SafeDumper):
    """Safe dumper writing multi-line strings (long PromQL) as ``|`` blocks."""


BlockDumper.add_representer(
    str, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)
)


def to_yaml(document: dict[str, Any]) -> str:
    """A rendered document as YAML: keys in order, multi-line strings as blocks, long lines unwrapped."""
    return yaml.dump(document, Dumper=BlockDumper, sort_keys=False, allow_unicode=True, width=4096)


def write_or_check(text: str, out: str, check: bool, command: str) -> int:
    """``-``: print; ``check``: exit 1 when ``out`` differs from ``text``; else write ``out``."""
    if out == "-" and not check:
        sys.stdout.write(text)
        return 0
    path = Path(out)
    if check:
        if out == "-":
            sys.stderr.write("--check needs --out FILE: the file to compare with\n")
            return 2
        if not path.exists() or path.read_text() != text:
            sys.stderr.write(f"{path} is stale: run {command}\n")
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    sys.stdout.write(f"wrote {path}\n")
    return 0
