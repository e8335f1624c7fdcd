"""``write_or_check``: the shared tail of the render commands (print, write, or check a rendered file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.rendered import write_or_check

TEXT = "groups:\n- name: dmsac\n"
COMMAND = "python -m cluster.alerts render"


def test_dash_prints_the_text_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert write_or_check(TEXT, "-", False, COMMAND) == 0
    assert capsys.readouterr().out == TEXT
    assert list(tmp_path.iterdir()) == []


def test_check_of_dash_is_refused_not_passed(capsys) -> None:
    """``--out - --check`` has no file to compare with: an error, never a silent pass."""
    assert write_or_check(TEXT, "-", True, COMMAND) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "--check needs --out FILE: the file to compare with\n")


def test_write_creates_the_parent_folders_and_names_the_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "deploy" / "prometheus" / "alerts.yml"
    assert write_or_check(TEXT, str(out), False, COMMAND) == 0
    assert out.read_text() == TEXT
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_check_passes_silently_on_an_identical_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "alerts.yml"
    out.write_text(TEXT)
    assert write_or_check(TEXT, str(out), True, COMMAND) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("on_disk", [None, TEXT + "# edited by hand\n"], ids=["missing", "different"])
def test_check_fails_on_a_stale_file_naming_the_command_and_leaves_it(tmp_path: Path, capsys, on_disk) -> None:
    out = tmp_path / "alerts.yml"
    if on_disk is not None:
        out.write_text(on_disk)
    assert write_or_check(TEXT, str(out), True, COMMAND) == 1
    assert capsys.readouterr().err == f"{out} is stale: run python -m cluster.alerts render\n"
    assert (out.read_text() if out.exists() else None) == on_disk


def test_to_yaml_keeps_key_order_writes_multi_line_strings_as_blocks_and_does_not_wrap() -> None:
    from cluster.rendered import to_yaml

    long = "x" * 200
    text = to_yaml({"b": "up == 0\nor absent(up)", "a": long})
    assert text == f"b: |-\n  up == 0\n  or absent(up)\na: {long}\n"
