"""The ``setec`` client commands, as Go's CLI has them: the pure rules in process (Go's quoting,
tables, version parsing, whitespace rule, confirmation tokens), then the console script
as a subprocess against a real server on loopback, through pipes and a pseudo-terminal.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from console_scripts import clean_env, console_script, default_sigint, run_setec

from setec_cli.confirm import check_confirmation, confirmation_token
from setec_cli.formats import go_quote, parse_uint32, tabwrite
from setec_cli.options import CommandError, client_command
from setec_cli.value import SURROUNDING_WHITESPACE, check_put_text
from setec_core.testing import SUPERUSER, make_caller
from setec_core.testing.server import LocalServer, new_server
from setec_plugins.policy_authz import PolicyAuthorizer, new_token, policy_entry

SECRET = b"s3cret-d0-not-print-7c1e"


SETEC = console_script("setec")


def setec(
    *args: str, server: str | None = None, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` with stdin a pipe holding ``stdin``; never a traceback."""
    return run_setec(*args, server=server, stdin=stdin, env=env)


def in_pty(
    args: Sequence[str],
    server: str,
    *,
    stdin_tty: bool = True,
    replies: Sequence[tuple[bytes, bytes]] = (),
    interrupt_after: bytes | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``setec ARGS`` with stdout (and stdin) on a pseudo-terminal; answer each
    prompt in ``replies`` once it appears. Returns (exit code, terminal output with
    "\\r\\n" as "\\n", stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [SETEC, *args],
        stdin=slave if stdin_tty else subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=clean_env(server),
        preexec_fn=default_sigint if interrupt_after is not None else None,
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes | None) -> None:
        nonlocal seen
        deadline = time.monotonic() + 20
        while marker is None or marker not in seen:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"timed out waiting for {marker!r}; got {seen!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                if marker is None:
                    return
                raise AssertionError(f"terminal closed before {marker!r}; got {seen!r}")
            seen += chunk

    try:
        for prompt, reply in replies:
            read_until(prompt)
            os.write(master, reply)
        if interrupt_after is not None:
            read_until(interrupt_after)
            proc.send_signal(signal.SIGINT)
        read_until(None)
        assert proc.stderr is not None
        err = proc.stderr.read()
        code = proc.wait(20)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert b"Traceback" not in err, err.decode(errors="replace")
    return code, seen.replace(b"\r\n", b"\n"), err


_names = itertools.count()


@pytest.fixture
def name() -> str:
    """A secret name no other test uses."""
    return f"test/secret-{next(_names)}"


def wait_clear_of_token_boundary() -> None:
    # A confirmation token changes when Unix time reaches 1 mod 60; keep a test that
    # fetches a token and then uses it from straddling that moment.
    until_boundary = (1.0 - time.time() % 60) % 60
    if until_boundary < 3:
        time.sleep(until_boundary + 0.1)


# --- Go's formatting rules, in process ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("dev/hello-world", '"dev/hello-world"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("tab\tnew\nline\r", r'"tab\tnew\nline\r"'),
        ("\a\b\f\v", r'"\a\b\f\v"'),
        ("nul\x00esc\x1bdel\x7f", r'"nul\x00esc\x1bdel\x7f"'),
        ("nbsp\u00a0nel\u0085", r'"nbsp\u00a0nel\u0085"'),
        ("zero\u200bwidth", r'"zero\u200bwidth"'),
        ("café ☃ 😀", '"café ☃ 😀"'),
        ("private\U0010fffd", r'"private\U0010fffd"'),
        ("bad\udcffbyte", r'"bad\xffbyte"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    """Names are quoted as Go's %q (strconv.Quote)."""
    assert go_quote(text) == quoted


@pytest.mark.parametrize(
    ("text", "table"),
    [
        (
            "NAME\tACTIVE\tVERSIONS\ndev/hello-world\t1\t1\nprod/db\t3\t1,2,3\n",
            "NAME            ACTIVE VERSIONS\n"
            "dev/hello-world 1      1\n"
            "prod/db         3      1,2,3\n",
        ),
        ("NAME\tACTIVE\tVERSIONS\n", "NAME ACTIVE VERSIONS\n"),
        # Widths are code points, not bytes.
        ("é☃\t1\tx\nab\t22\ty\n", "é☃ 1  x\nab 22 y\n"),
        # A line with fewer cells ends the column: the blocks are sized apart.
        ("aaa\tb\nc\nd\te\n", "aaa b\nc\nd e\n"),
        ("a\tb\tc\nlong\tx\nq\tr\ts\n", "a    b c\nlong x\nq    r s\n"),
        # Empty cells are padded; the last cell never is.
        ("\tx\nyy\t\n", "   x\nyy \n"),
        # A form feed ends the table; the next one is sized on its own.
        ("a\t1\n\fbbbb\t2\n", "a 1\n\nbbbb 2\n"),
    ],
)
def test_tabwrite(text: str, table: str) -> None:
    """Tables are Go's text/tabwriter with padding 1 and spaces."""
    assert tabwrite(text) == table


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("0", 0),
        ("7", 7),
        ("007", 7),
        ("4294967295", 4294967295),
        ("4294967296", "value out of range"),
        ("18446744073709551617", "value out of range"),
        ("99999999999x", "value out of range"),
        ("x9999999999", "invalid syntax"),
        ("", "invalid syntax"),
        ("+1", "invalid syntax"),
        ("-1", "invalid syntax"),
        (" 1", "invalid syntax"),
        ("0x10", "invalid syntax"),
        ("1_000", "invalid syntax"),
        ("\u0663", "invalid syntax"),
    ],
)
def test_parse_uint32(text: str, result: int | str) -> None:
    """Versions are parsed as Go's strconv.ParseUint(s, 10, 32), with its messages."""
    if isinstance(result, int):
        assert parse_uint32(text) == result
    else:
        with pytest.raises(ValueError, match=r"^strconv\.ParseUint: parsing ") as info:
            parse_uint32(text)
        assert str(info.value) == f"strconv.ParseUint: parsing {go_quote(text)}: {result}"


@pytest.mark.parametrize(
    ("value", "flags", "result"),
    [
        # Not UTF-8: binary, kept exactly, whatever the flags.
        (b" \xff\xfe \n", {}, b" \xff\xfe \n"),
        (b" \xff\n", {"trim_space": True}, b" \xff\n"),
        # No surrounding whitespace: kept.
        (b"hello, world", {}, b"hello, world"),
        (b"in ner\tspace", {}, b"in ner\tspace"),
        (b"", {}, b""),
        # Surrounding whitespace and no flag: an error.
        (b"hello\n", {}, None),
        (b" hello", {}, None),
        (b"\thello\r\n", {}, None),
        ("\u0085hello".encode(), {}, None),
        ("hello\u00a0".encode(), {}, None),
        ("\u3000hello\u2029".encode(), {}, None),
        # --verbatim keeps it, and wins over --trim-space.
        (b"hello\n", {"verbatim": True}, b"hello\n"),
        (b"hello\n", {"verbatim": True, "trim_space": True}, b"hello\n"),
        # --trim-space trims Go's whitespace, Unicode included.
        (b" \t\v\fhello\r\n", {"trim_space": True}, b"hello"),
        ("\u0085\u00a0hello\u2028\u205f".encode(), {"trim_space": True}, b"hello"),
        (b" \n ", {"trim_space": True}, b""),
        # U+001C..U+001F are not White_Space for Go (Python's strip() would remove them).
        (b"\x1chello\x1f", {}, b"\x1chello\x1f"),
        # U+200B (zero width space) is not White_Space either.
        ("\u200bhello".encode(), {}, "\u200bhello".encode()),
    ],
)
def test_whitespace_rule(value: bytes, flags: dict[str, bool], result: bytes | None) -> None:
    """Go's checkPutText, case by case."""
    if result is None:
        with pytest.raises(CommandError) as info:
            check_put_text(value, **flags)
        assert info.value.message == SURROUNDING_WHITESPACE
    else:
        assert check_put_text(value, **flags) == result


def test_confirmation_token_worked_example() -> None:
    """At Unix time 1700000000 the token for deleting dev/hello-world is
    1b05517.f7683e7862887fe5."""
    assert confirmation_token("delete-secret:dev/hello-world", 1700000000) == (
        "1b05517.f7683e7862887fe5"
    )


def test_confirmation_token_window() -> None:
    """The window moves on when Unix time reaches 1 mod 60 (1700000041 here)."""
    request = "delete-secret:dev/hello-world"
    token = confirmation_token(request, 1700000000)
    assert confirmation_token(request, 1699999981) == token  # 1 mod 60: first second
    assert confirmation_token(request, 1700000040.999) == token  # last second
    assert confirmation_token(request, 1699999980) != token
    assert confirmation_token(request, 1700000041).startswith("1b05518.")
    assert check_confirmation(request, token, 1700000000) is None
    assert check_confirmation(request, "", 1700000000) == (
        'confirmation required for "delete-secret:dev/hello-world", '
        'use token "1b05517.f7683e7862887fe5"'
    )
    assert check_confirmation(request, "1b05516.f7683e7862887fe5", 1700000000) == (
        'incorrect confirmation for "delete-secret:dev/hello-world", '
        'use token "1b05517.f7683e7862887fe5"'
    )


# --- put --------------------------------------------------------------------------------


def test_put_from_pipe(server: LocalServer, name: str) -> None:
    """A pipe is read whole; "Read N bytes" on stderr, the version on stdout."""
    proc = setec("put", name, server=server.url, stdin=b"hello, world")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f'Secret saved as "{name}", version 1\n'.encode(),
        b"Read 12 bytes from stdin\n",
    )
    assert server.client().get(name).value == b"hello, world"


def test_put_new_version_prints_activation_hint(server: LocalServer, name: str) -> None:
    """A version other than 1 gets the two-space activation hint."""
    server.client().put(name, b"one")
    proc = setec("put", name, server=server.url, stdin=b"two")
    assert (
        proc.stdout
        == (
            f'Secret saved as "{name}", version 2\n'
            f"  To activate this version, run 'setec activate \"{name}\" 2'\n"
        ).encode()
    )
    assert server.client().info(name).active_version == 1


def test_put_deduplicated_to_active_version_has_no_hint(server: LocalServer, name: str) -> None:
    """Unlike Go, no hint to activate a version that is already active."""
    client = server.client()
    client.put(name, b"one")
    client.put(name, b"two")
    client.activate(name, 2)
    proc = setec("put", name, server=server.url, stdin=b"two")
    assert proc.stdout == f'Secret saved as "{name}", version 2\n'.encode()


@pytest.mark.parametrize(
    ("stdin", "flags", "stored", "stderr"),
    [
        (b"hello\n", (), None, f"Error: {SURROUNDING_WHITESPACE}\n"),
        ("\u00a0hi\u0085".encode(), ("--trim-space",), b"hi", "Read 2 bytes from stdin\n"),
        (b"\x00\xff\n", (), b"\x00\xff\n", "Read 3 bytes from stdin\n"),
        (b"", (), None, "Error: empty secret value\n"),
        (b"", ("--empty-ok",), b"", "Read 0 bytes from stdin\n"),
    ],
)
def test_put_pipe_whitespace_rule(
    server: LocalServer,
    name: str,
    stdin: bytes,
    flags: tuple[str, ...],
    stored: bytes | None,
    stderr: str,
) -> None:
    """The whitespace rule and the empty check on a pipe, end to end."""
    proc = setec("put", *flags, name, server=server.url, stdin=stdin)
    assert proc.stderr.decode() == stderr
    if stored is None:
        assert (proc.returncode, proc.stdout) == (1, b"")
        assert name not in [info.name for info in server.client().list()]
    else:
        assert proc.returncode == 0
        assert server.client().get(name).value == stored


def test_put_from_file(server: LocalServer, name: str, tmp_path: Path) -> None:
    """--from-file gets the whitespace rule and prints no "Read" line."""
    path = tmp_path / "value"
    path.write_bytes(SECRET + b"\n")
    refused = setec("put", "--from-file", str(path), name, server=server.url)
    assert (refused.returncode, refused.stderr) == (
        1,
        f"Error: {SURROUNDING_WHITESPACE}\n".encode(),
    )
    proc = setec("put", name, "--from-file", str(path), "--trim-space", server=server.url)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert server.client().get(name).value == SECRET
    path.write_bytes(b"")
    empty = setec("put", "--from-file", str(path), name, server=server.url)
    assert (empty.returncode, empty.stderr) == (1, b"Error: empty secret value\n")


def test_put_from_unreadable_file_names_it(server: LocalServer, name: str, tmp_path: Path) -> None:
    """An unreadable --from-file is one line naming the file and what to check."""
    missing = tmp_path / "no-such-file"
    proc = setec("put", "--from-file", str(missing), name, server=server.url)
    assert proc.returncode == 1
    assert (
        proc.stderr
        == (
            f'Error: cannot read --from-file "{missing}": No such file or directory; '
            "check the path and that you may read the file\n"
        ).encode()
    )


def test_put_prompts_on_a_terminal(server: LocalServer, name: str) -> None:
    """On a terminal, two hidden prompts on stdout; the value is not echoed and
    the whitespace rule does not apply."""
    code, out, err = in_pty(
        ["put", name],
        server.url,
        replies=[(b"Enter secret: ", SECRET + b" \n"), (b"Confirm secret: ", SECRET + b" \n")],
    )
    assert (code, err) == (0, b"")
    assert (
        out == f'Enter secret: \nConfirm secret: \nSecret saved as "{name}", version 1\n'.encode()
    )
    assert server.client().get(name).value == SECRET + b" "


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (b"\n", None, b"Error: no secret provided, aborting\n"),
        (SECRET + b"\n", b"other\n", b"Error: secrets do not match, aborting\n"),
    ],
)
def test_put_prompt_errors(
    server: LocalServer, name: str, first: bytes, second: bytes | None, message: bytes
) -> None:
    """An empty first entry or a different confirmation aborts, storing nothing."""
    replies = [(b"Enter secret: ", first)]
    if second is not None:
        replies.append((b"Confirm secret: ", second))
    code, out, err = in_pty(["put", name], server.url, replies=replies)
    assert (code, err) == (1, message)
    assert SECRET not in out
    assert name not in [info.name for info in server.client().list()]


def test_put_interrupted_at_the_prompt(server: LocalServer, name: str) -> None:
    """Ctrl-C at the prompt exits 1 with no traceback and stores nothing."""
    code, _, err = in_pty(["put", name], server.url, interrupt_after=b"Enter secret: ")
    assert code == 1
    assert b"Aborted!" in err
    assert name not in [info.name for info in server.client().list()]


# --- get --------------------------------------------------------------------------------


def test_get_to_a_pipe_is_raw_bytes(server: LocalServer, name: str) -> None:
    """To a pipe, the exact bytes, no newline."""
    server.client().put(name, b"\x00\xffbinary\n")
    proc = setec("get", name, server=server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"\x00\xffbinary\n", b"")


def test_get_to_a_terminal_adds_a_newline(server: LocalServer, name: str) -> None:
    """To a terminal, the value and a newline."""
    server.client().put(name, SECRET)
    code, out, err = in_pty(["get", name], server.url, stdin_tty=False)
    assert (code, out, err) == (0, SECRET + b"\n", b"")


def test_get_versions_and_if_changed(server: LocalServer, name: str) -> None:
    """--version N gets that version; with --if-changed, the active one only if
    it is not N, else exit 1 "value not changed"."""
    client = server.client()
    client.put(name, b"v1")
    client.put(name, b"v2")
    assert setec("get", name, "--version", "2", server=server.url).stdout == b"v2"
    unchanged = setec("get", name, "--version", "1", "--if-changed", server=server.url)
    assert (unchanged.returncode, unchanged.stdout, unchanged.stderr) == (
        1,
        b"",
        b"Error: failed to get secret: value not changed\n",
    )
    changed = setec("get", "--if-changed", "--version=2", name, server=server.url)
    assert (changed.returncode, changed.stdout) == (0, b"v1")


def test_get_version_beyond_uint32_is_refused(server: LocalServer, name: str) -> None:
    """2^32+1 is a usage error, not version 1 (Go truncates it to 32 bits)."""
    server.client().put(name, SECRET)
    proc = setec("get", "--version", "4294967297", name, server=server.url)
    assert (proc.returncode, proc.stdout) == (2, b"")
    assert proc.stderr.endswith(
        b"Error: Invalid value for '--version': \"4294967297\" is not a version: "
        b"versions are whole numbers from 0 to 4294967295\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", "test/missing"), "failed to get secret: not found"),
        (("info", "test/missing"), "failed to get secret info: not found"),
        (("activate", "test/missing", "1"), "failed to set active version: not found"),
        (
            ("activate", "test/missing", "x1"),
            'invalid version "x1": strconv.ParseUint: parsing "x1": invalid syntax',
        ),
    ],
)
def test_not_found_and_bad_versions(
    server: LocalServer, args: tuple[str, ...], message: str
) -> None:
    """Go's messages for a missing secret and a version that does not parse."""
    proc = setec(*args, server=server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", f"Error: {message}\n".encode())


# --- list and info ----------------------------------------------------------------------


def test_list_and_info_tables() -> None:
    """Go's tab-aligned tables, exact to the byte."""
    with new_server() as fresh:
        empty = setec("list", server=fresh.url)
        assert (empty.returncode, empty.stdout) == (0, b"NAME ACTIVE VERSIONS\n")
        client = fresh.client()
        client.put("dev/hello-world", b"x")
        for i in range(3):
            client.put("prod/db", f"v{i}".encode())
        client.activate("prod/db", 3)
        client.create_version("prod/\u00e9t\u00e9", 12, b"x")
        # Secrets never accessed as far as the server knows, as a Go server has them
        # all: Go's table (the extra columns are tested below).
        fresh.db._accessed.clear()
        proc = setec("list", server=fresh.url)
        assert proc.stdout.decode() == (
            "NAME            ACTIVE VERSIONS\n"
            "dev/hello-world 1      1\n"
            "prod/db         3      1,2,3\n"
            "prod/\u00e9t\u00e9        12     12\n"
        )
        info = setec("info", "prod/db", server=fresh.url)
        assert (
            info.stdout == b"Name:           prod/db\nActive version: 3\nVersions:       1, 2, 3\n"
        )


def test_list_and_info_json() -> None:
    """docs/cli.md: --json prints name, versions and active_version."""
    with new_server() as fresh:
        client = fresh.client()
        client.put("a", b"1")
        client.put("a", b"2")
        fresh.db._accessed.clear()  # no last access: the keys of a Go server's answer
        listed = json.loads(setec("list", "--json", server=fresh.url).stdout)
        assert listed == [{"name": "a", "versions": [1, 2], "active_version": 1}]
        info = json.loads(setec("info", "a", "--json", server=fresh.url).stdout)
        assert info == {"name": "a", "versions": [1, 2], "active_version": 1}


def test_list_and_info_show_description_and_last_access() -> None:
    """docs/cli.md: list adds the column LAST ACCESS (to the second, ``-`` for never)
    when a secret has one and DESCRIPTION when one has it, without trailing spaces;
    info adds two lines, and --json adds ``description`` and ``last_access`` (RFC 3339
    as on the wire)."""
    with new_server() as fresh:
        db = fresh.db
        db.put(SUPERUSER, "app/db", b"x")
        db.put(SUPERUSER, "app/key", b"x")
        db._accessed.pop("app/key")  # never accessed
        set_info = setec("set-info", "app/key", "--description", "Signing key", server=fresh.url)
        assert (set_info.returncode, set_info.stdout, set_info.stderr) == (
            0,
            b"",
            b'Set the description of secret "app/key"\n',
        )
        when = db.info(SUPERUSER, "app/db").last_access
        assert when is not None
        shown = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        proc = setec("list", server=fresh.url)
        assert proc.stdout.decode() == (
            "NAME    ACTIVE VERSIONS LAST ACCESS          DESCRIPTION\n"
            f"app/db  1      1        {shown}\n"
            "app/key 1      1        -                    Signing key\n"
        )

        info = setec("info", "app/key", server=fresh.url)
        assert info.stdout == (
            b"Name:           app/key\nActive version: 1\nVersions:       1\n"
            b"Description:    Signing key\n"
        )
        info = setec("info", "app/db", server=fresh.url)
        assert info.stdout.decode().endswith(f"Versions:       1\nLast access:    {shown}\n")
        listed = json.loads(setec("list", "--json", server=fresh.url).stdout)
        assert listed[1] == {
            "name": "app/key",
            "versions": [1],
            "active_version": 1,
            "description": "Signing key",
        }
        assert listed[0]["last_access"].startswith(shown[:-1])
        cleared = setec("set-info", "app/key", "--description", "", server=fresh.url)
        assert cleared.stderr == b'Cleared the description of secret "app/key"\n'
        assert db.info(SUPERUSER, "app/key").description == ""
        only_times = setec("list", server=fresh.url).stdout.decode()
        assert only_times == (
            "NAME    ACTIVE VERSIONS LAST ACCESS\n"
            f"app/db  1      1        {shown}\n"
            "app/key 1      1        -\n"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set-info", "a", "--description", "x\ty"), "the description holds U+0009"),
        (
            ("set-info", "missing", "--description", "d"),
            'failed to set the description of "missing": not found',
        ),
        (("set-info", "a"), "Missing option '--description'"),
    ],
)
def test_set_info_errors(server: LocalServer, args: tuple[str, ...], message: str) -> None:
    """One line naming what was wrong; no traceback."""
    server.client().put("a", b"v")
    proc = setec(*args, server=server.url)
    assert proc.returncode != 0
    assert message in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def test_set_info_against_a_go_server_sends_nothing(tmp_path: Path) -> None:
    """A server without the set-info extension (Go setec answers 404 to
    /api/extensions) is refused by the client, which says so."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.Popen(
            [SETEC, "set-info", "a", "--description", "d"],
            env=clean_env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 19\r\nConnection: close\r\n\r\n404 page not found\n"
            )
        _, err = proc.communicate(timeout=30)
    assert request.startswith(b"POST /api/extensions ")
    assert proc.returncode == 1
    assert b"does not offer secret descriptions" in err
    assert b"nothing was sent" in err


# --- activate, create-version, delete ---------------------------------------------------


def test_activate(server: LocalServer, name: str) -> None:
    """No output on success; a leading-zero version is the same number."""
    client = server.client()
    client.put(name, b"1")
    client.put(name, b"2")
    proc = setec("activate", name, "002", server=server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert client.info(name).active_version == 2


def test_create_version(server: LocalServer, name: str) -> None:
    """create-version stores exactly that version, active, and says so like put; a
    claimed version is refused with a hint."""
    proc = setec("create-version", name, "5", server=server.url, stdin=SECRET)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f'Secret saved as "{name}", version 5 (now active)\n'.encode(),
        f"Read {len(SECRET)} bytes from stdin\n".encode(),
    )
    assert server.client().get(name).value == SECRET
    again = setec("create-version", name, "5", server=server.url, stdin=b"other")
    assert again.returncode == 1
    assert again.stderr.endswith(
        f'Error: failed to create secret "{name}" version 5: version is already claimed; '
        "a version that exists or was deleted cannot be created again\n".encode()
    )
    zero = setec("create-version", name, "0", server=server.url, stdin=b"x")
    assert zero.stderr == b'Error: invalid version "0": versions start at 1\n'


def test_delete_needs_the_confirmation_token(server: LocalServer, name: str) -> None:
    """No token or a wrong one deletes nothing and names the right token; the
    right one deletes, stdout empty as in Go, and says so on stderr."""
    server.client().put(name, SECRET)
    wait_clear_of_token_boundary()
    request = f"delete-secret:{name}"
    token = confirmation_token(request)
    missing = setec("delete", name, server=server.url)
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        1,
        b"",
        f'Error: confirmation required for "{request}", use token "{token}"\n'.encode(),
    )
    wrong = setec("delete", name, "1b05517.f7683e7862887fe5", server=server.url)
    assert (wrong.returncode, wrong.stderr) == (
        1,
        f'Error: incorrect confirmation for "{request}", use token "{token}"\n'.encode(),
    )
    assert server.client().get(name).value == SECRET
    done = setec("delete", name, token, server=server.url)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        b"",
        f'Deleted secret "{name}" (version 1)\n'.encode(),
    )
    assert name not in [info.name for info in server.client().list()]


def test_delete_version(server: LocalServer, name: str) -> None:
    """The request names the version in canonical decimal; stdout stays empty as in
    Go, stderr says what went; the active version cannot be deleted (the server's
    reason is shown)."""
    client = server.client()
    client.put(name, b"1")
    client.put(name, b"2")
    wait_clear_of_token_boundary()
    request = f"delete-version:{name}:2"
    token = confirmation_token(request)
    missing = setec("delete-version", name, "002", server=server.url)
    assert missing.stderr == (
        f'Error: confirmation required for "{request}", use token "{token}"\n'.encode()
    )
    done = setec("delete-version", name, "2", token, "ignored-extra", server=server.url)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        b"",
        f'Deleted version 2 of secret "{name}"\n'.encode(),
    )
    assert client.info(name).versions == (1,)
    active_token = confirmation_token(f"delete-version:{name}:1")
    active = setec("delete-version", name, "1", active_token, server=server.url)
    assert active.returncode == 1
    assert active.stderr.startswith(
        f'Error: failed to delete secret "{name}" version 1: request returned status 400: '.encode()
    )


# --- global options, usage and failures ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get",), 'wrong number of arguments for "get": got 0, want 1'),
        (("delete",), 'wrong number of arguments for "delete": got 0, want at least 1'),
        (("list", "a", "b c"), 'extra arguments after command "list": ["a" "b c"]'),
        (("get", "--no-such-flag", "x"), "No such option '--no-such-flag'."),
    ],
)
def test_usage_errors_exit_2(server: LocalServer, args: tuple[str, ...], message: str) -> None:
    """Usage errors print usage and "Error: <msg>" and exit 2."""
    proc = setec(*args, server=server.url)
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"Usage: setec ")
    assert proc.stderr.endswith(f"Error: {message}\n".encode())


def test_no_server_address() -> None:
    """An empty server address (no -s, SETEC_SERVER empty) is Go's message, exit 1."""
    proc = setec("list", env={"SETEC_SERVER": ""})
    assert (proc.returncode, proc.stderr) == (1, b"Error: no server address is set\n")


def test_server_flag_before_or_after_the_command(server: LocalServer, name: str) -> None:
    """-s works before or after the subcommand, and overrides SETEC_SERVER."""
    server.client().put(name, SECRET)
    dead = f"http://127.0.0.1:{closed_port()}"
    assert setec("-s", server.url, "get", name, server=dead).stdout == SECRET
    assert setec("get", name, "--server", server.url, server=dead).stdout == SECRET


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_is_one_clear_line() -> None:
    """A server that is down: exit 1, one line naming the server and saying the
    connection was refused (not urllib3's layers of wrapping)."""
    url = f"http://127.0.0.1:{closed_port()}"
    proc = setec("list", server=url)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"Error: failed to list secrets: cannot connect to {url}: connection refused\n"
    )


def test_server_without_scheme_says_what_to_do() -> None:
    """A server address that is not a URL is refused before any request."""
    proc = setec("list", server="secrets.example.ts.net")
    assert proc.stderr == (
        b'Error: server address "secrets.example.ts.net" is not an http:// or https:// URL; '
        b"set -s or $SETEC_SERVER to e.g. https://secrets.example.ts.net\n"
    )


def test_broken_pipe_on_stdout_is_quiet(server: LocalServer, name: str) -> None:
    """A reader that goes away (setec get x | head -c1) ends setec without a traceback."""
    server.client().put(name, b"x" * (600 << 10))  # far more than a pipe holds
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [SETEC, "get", name],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=clean_env(server.url),
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == b""


def test_a_bug_is_one_line_without_its_text() -> None:
    """An unexpected exception prints its type only, never its text (which could hold a
    value), and no traceback."""

    @client_command("boom")
    def boom() -> None:
        raise RuntimeError(SECRET.decode())

    result = CliRunner().invoke(boom, [], env={"SETEC_DEBUG": None})
    assert result.exit_code == 1
    assert result.output == (
        "Error: internal error (RuntimeError); run with SETEC_DEBUG=1 to see the "
        "traceback, and please report it\n"
    )


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["get", "x"], "get"),
        (["-s", "https://h", "get", "x"], "get"),
        (["--server=https://h", "list"], "list"),
        (["--token-file", "f", "--server", "u", "put", "x"], "put"),
        (["--", "list"], "list"),
        (["server", "--dev"], "server"),
        (["-h"], None),
        ([], None),
    ],
)
def test_invoked_command(args: list[str], command: str | None) -> None:
    """main() finds the subcommand past the global options, to skip loading plugins for
    built-in client commands."""
    from setec_cli.setec import invoked_command

    assert invoked_command(args) == command


def test_every_command_is_documented() -> None:
    """docs/cli.md has a section for every client command, and lists it in its table."""
    from setec_cli.setec import CLIENT_COMMANDS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    headings = {line[3:] for line in doc.splitlines() if line.startswith("## ")}
    for command in CLIENT_COMMANDS - {"version"}:
        assert f"[`{command}" in doc, command
        assert command in headings or any(command in h.split(" and ") for h in headings), command


# --- authorization ------------------------------------------------------------------------


def test_access_denied_messages() -> None:
    """A 403 is "access denied" after Go's prefix; no value is printed."""
    caller = make_caller((["get", "info"], ["allowed/*"]))
    with new_server(caller=caller) as limited:
        limited.db.put(make_caller((["put"], ["*"])), "other/x", SECRET)
        put = setec("put", "allowed/x", server=limited.url, stdin=SECRET)
        assert put.stderr.endswith(b"Error: failed to write secret: access denied\n")
        get = setec("get", "other/x", server=limited.url)
        assert (get.returncode, get.stdout, get.stderr) == (
            1,
            b"",
            b"Error: failed to get secret: access denied\n",
        )
        assert SECRET not in put.stdout + put.stderr + get.stderr


def test_bearer_token_from_file_or_environment(tmp_path: Path) -> None:
    """A policy-authorizer server: the token comes from --token-file or SETEC_TOKEN, is
    required, and is never printed."""
    token = new_token()
    policy = tmp_path / "policy.json"
    entry = policy_entry(
        token, user="alice@example.com", rules=[{"action": ["get", "put", "info"], "secret": ["*"]}]
    )
    policy.write_text(json.dumps({"tokens": [entry]}))
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with new_server(authorizer=PolicyAuthorizer(str(policy))) as guarded:
        put = setec("--token-file", str(token_file), "put", "a", server=guarded.url, stdin=SECRET)
        assert put.returncode == 0, put.stderr
        got = setec("get", "a", "--token-file", str(token_file), server=guarded.url)
        assert got.stdout == SECRET
        via_env = setec("get", "a", server=guarded.url, env={"SETEC_TOKEN": token})
        assert via_env.stdout == SECRET
        denied = setec("get", "a", server=guarded.url)
        assert denied.stderr == (
            b"Error: failed to get secret: access denied: missing or unknown bearer token\n"
        )
        missing = setec("get", "a", "--token-file", str(tmp_path / "nope"), server=guarded.url)
        assert (
            missing.stderr
            == (
                f'Error: cannot read --token-file "{tmp_path / "nope"}": No such file or '
                "directory; check the path and that you may read the file\n"
            ).encode()
        )
        outputs = [put, got, via_env, denied, missing]
        for proc in outputs:
            assert token.encode() not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [("get", "x"), ("list",)])
def test_closed_stdout_is_an_error_not_silence(args: tuple[str, ...]) -> None:
    """``setec get x >&-``: exit 1 with a message, not an internal error nor a silent 0."""
    proc = subprocess.run(
        [SETEC, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env("http://127.0.0.1:9"),
        timeout=30,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert (proc.returncode, proc.stderr) == (
        1,
        b"Error: standard output is closed; nothing can be printed\n",
    )


def test_closed_stdin_reads_as_empty(server: LocalServer, name: str) -> None:
    """``setec put x <&-``: an empty input, so Go's "empty secret value"."""
    proc = subprocess.run(
        [SETEC, "put", name],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=clean_env(server.url),
        timeout=30,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert (proc.returncode, proc.stderr) == (1, b"Error: empty secret value\n")


def test_server_url_with_credentials_is_refused_unquoted() -> None:
    """A server URL with a user name and password exits 1 saying so, and never prints
    the password."""
    proc = setec("list", server="http://user:pa55word@127.0.0.1:9")
    assert proc.returncode == 1
    assert b"pa55word" not in proc.stderr + proc.stdout
    assert b"must not carry a user name or password" in proc.stderr
