"""docs/backups.md stays true to setec-serve: every command line it shows names real
commands and flags, and every backup flag of setec-serve is documented there."""

from __future__ import annotations

import shlex
from pathlib import Path

from serve_commands import flags_of, resolve

from setec_cli.serve import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "backups.md"


def command_lines() -> list[list[str]]:
    """The `setec-serve` lines of the page's plain (shell) code blocks, split."""
    lines, fence, block = [], None, []
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, block = line[3:], []
                continue
            if fence == "":
                joined = "\n".join(block).replace("\\\n", " ")
                for command in joined.splitlines():
                    if command.startswith("setec-serve "):
                        lines.append(shlex.split(command.split("#")[0])[1:])
            fence = None
        elif fence is not None:
            block.append(line)
    return lines


def test_doc_shows_the_admin_commands() -> None:
    """The page shows each admin command at least once."""
    text = "\n".join(" ".join(line) for line in command_lines())
    for command in (
        "backup list",
        "backup verify",
        "backup now",
        "restore",
        "rotate-kek",
        "rotate-dek",
    ):
        assert command in text, command


def test_every_command_line_uses_real_flags() -> None:
    """Each `setec-serve ...` line resolves to commands whose flags include every
    flag the line uses."""
    for tokens in command_lines():
        resolve(tokens)


def test_every_backup_flag_is_documented() -> None:
    """Each --backup* flag of the server appears on the page."""
    text = DOC.read_text()
    for flag in sorted(flags_of(cli)):
        if flag.startswith("--backup"):
            assert f"`{flag}" in text, flag


def test_doc_shows_the_format_setec_writes() -> None:
    """The page's format block starts with the magic line of the format setec writes."""
    from setec_core.backup.snapshot import MAGIC

    assert f"```\n{MAGIC.decode()}" in DOC.read_text()
