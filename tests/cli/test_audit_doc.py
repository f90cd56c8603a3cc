"""docs/audit.md stays true to setec-serve: every command it names is a real command with
real flags, and every flag of the audit commands is documented there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from serve_commands import flags_of, resolve

from setec_cli.serve import cli
from setec_core.options import DeclaredOption
from setec_core.plugins import Plugins

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def command_lines() -> list[list[str]]:
    """Every `setec-serve ...` the page names, in backticks or after a ``$`` prompt."""
    text = DOC.read_text()
    found = re.findall(r"`setec-serve ([^`]+)`", text)
    found += re.findall(r"^\$ setec-serve (.+)$", text, re.M)
    return [shlex.split(line) for line in found]


def test_every_command_the_page_names_is_real() -> None:
    """Each `setec-serve ...` on the page resolves to a command below the top level,
    and each flag it uses is one of that command's."""
    lines = command_lines()
    assert len(lines) >= 5
    for tokens in lines:
        command, _ = resolve(tokens)
        assert command is not cli, tokens


def test_the_page_documents_every_audit_command_and_flag() -> None:
    """audit verify, audit rotate and check have a section, and each of their own flags
    (beyond the store and backup options, and the options key providers declare, which
    docs/keys.md documents with their providers) appears on the page."""
    text = DOC.read_text()
    key_options = {d.option.flag for d in Plugins.load().declared_options() if _is_key_option(d)}
    for path in (["audit", "verify"], ["audit", "rotate"], ["check"]):
        assert f"### `setec-serve {' '.join(path)}" in text, path
        command, _ = resolve(path)
        shared = ("--backup", "--state-dir", "--kms-key-name", "--storage", "--help", "-h")
        for flag in sorted(flags_of(command)):
            if not flag.startswith(shared) and flag not in key_options:
                assert f"`{flag}" in text or f"{flag} " in text, (path, flag)


def _is_key_option(declared: DeclaredOption) -> bool:
    return any(kind == "key provider" for kind, _ in declared.owners)
