"""What ``-o PATH`` of ``setec get``, ``export`` and ``inject`` replaces, and what it
refuses (setec_cli/private_file.py; docs/cli.md, "get"): a regular file or a symlink
is replaced, never followed; a device, a named pipe, a directory, a symlink to one of
them, or a link through /proc (``/dev/stdout``) is refused before anything is fetched,
so a root user's ``-o /dev/null`` cannot turn a device into a file holding a secret.

Nothing here writes under the real /dev: the refused paths are links in a temporary
directory (to /dev/null, to /dev/stdout), and /dev's own entries are only looked at.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from console_scripts import run_setec

from setec_cli.options import CommandError
from setec_cli.private_file import check_target
from setec_core.testing import audit_entries
from setec_core.testing.server import LocalServer

SECRET = b"private-file-s3cret-4b7d"

WANT_A_FILE = "give the path of a regular file (without -o, the output goes to standard output)"
THROUGH_PROC = "it leads to a process's open file through /proc (as /dev/stdout does)"

_names = itertools.count()


@pytest.fixture
def name(server: LocalServer) -> str:
    """A secret holding SECRET, named as no other test's."""
    secret = f"pf{next(_names)}/db-pass"
    server.client().put(secret, SECRET)
    return secret


def command_args(command: str, name: str, tmp_path: Path) -> list[str]:
    """The arguments of ``command`` reading ``name``, before ``-o``."""
    if command == "get":
        return ["get", name]
    if command == "export":
        return ["export", "--prefix", name.rpartition("/")[0], "--format", "json"]
    template = tmp_path / "app.conf.tpl"
    template.write_text(f'pass = {{{{ setec "{name}" }}}}\n')
    return ["inject", "-i", str(template)]


def fifo(at: Path) -> Path:
    os.mkfifo(at)
    return at


def link(at: Path, to: str | Path) -> Path:
    at.symlink_to(to)
    return at


def a_directory(at: Path) -> Path:
    at.mkdir()
    return at


#: A path in the test's directory, made by the function; and what the refusal says it is.
REFUSED = [
    pytest.param(fifo, "it is a named pipe (FIFO)", id="fifo"),
    pytest.param(
        lambda p: link(p, fifo(p.with_name("real-fifo"))),
        "it is a symlink to a named pipe (FIFO)",
        id="link-to-fifo",
    ),
    pytest.param(
        lambda p: link(p, "/dev/null"),
        "it is a symlink to a character device",
        id="link-to-dev-null",
    ),
    pytest.param(lambda p: link(p, "/dev/stdout"), THROUGH_PROC, id="link-to-dev-stdout"),
    pytest.param(lambda p: link(p, "/proc/self/fd/1"), THROUGH_PROC, id="link-to-proc-fd"),
    pytest.param(lambda p: link(p, "/dev/fd/1"), THROUGH_PROC, id="link-to-dev-fd"),
    pytest.param(
        lambda p: link(p, a_directory(p.with_name("real-dir"))),
        "it is a symlink to a directory",
        id="link-to-directory",
    ),
]


@pytest.mark.parametrize("command", ["get", "export", "inject"])
@pytest.mark.parametrize(("make", "said"), REFUSED)
def test_output_that_is_not_a_regular_file_is_refused(
    server: LocalServer,
    name: str,
    tmp_path: Path,
    command: str,
    make: Callable[[Path], Path],
    said: str,
) -> None:
    """``-o`` naming a FIFO, or a symlink to a FIFO, a device, a directory or a
    process's open file, is refused with one line saying what it is; the path is left
    as it was and nothing is fetched. Standard output goes to a regular file here, so
    a link through /proc would reach a regular file: it is refused all the same."""
    target = make(tmp_path / "out")
    was_link = target.is_symlink()
    before = len(audit_entries(server.db))
    stdout_file = tmp_path / "stdout"
    with stdout_file.open("wb") as stdout:
        proc = run_setec(
            *command_args(command, name, tmp_path),
            "-o",
            str(target),
            server=server.url,
            stdout=stdout.fileno(),
        )
    assert proc.returncode == 1
    assert proc.stderr == f'Error: cannot write "{target}": {said}; {WANT_A_FILE}\n'.encode()
    assert target.is_symlink() == was_link
    if not was_link:
        assert stat.S_ISFIFO(target.lstat().st_mode)
    assert stdout_file.read_bytes() == b""
    assert audit_entries(server.db)[before:] == []


@pytest.mark.parametrize("command", ["get", "export", "inject"])
def test_symlink_to_a_regular_file_or_nothing_is_replaced(
    server: LocalServer, name: str, tmp_path: Path, command: str
) -> None:
    """A symlink to a regular file, or to nothing, is replaced by the new file (0600)
    and never followed: the file it pointed at is untouched."""
    args = command_args(command, name, tmp_path)
    precious = tmp_path / "someone-elses-file"
    precious.write_text("precious")
    for target in (link(tmp_path / "out", precious), link(tmp_path / "dangling", "nowhere")):
        proc = run_setec(*args, "-o", str(target), server=server.url)
        assert proc.returncode == 0, proc.stderr
        assert not target.is_symlink()
        assert SECRET in target.read_bytes()
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert precious.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/dev/null", "it is a character device"),
        ("/dev/stdout", THROUGH_PROC),
        ("/dev/fd/1", THROUGH_PROC),
        ("/proc/self/fd/1", THROUGH_PROC),
    ],
)
def test_devices_and_process_files_themselves_are_refused(path: str, said: str) -> None:
    """/dev/null, /dev/stdout and the like named directly are refused (checked only:
    nothing is written to /dev)."""
    with pytest.raises(CommandError) as caught:
        check_target(path)
    assert str(caught.value) == f'cannot write "{path}": {said}; {WANT_A_FILE}'
