"""What ``setec`` adds to Go's CLI for people and scripts: ``--version``, ``get --json``
and ``get -o``, ``list PREFIX``, ``-q``, ``delete --yes`` and what deletes report, the
server's reason for a refusal, and the messages for the usual first mistakes. Each runs
the console script against a real server on loopback (docs/cli.md)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from console_scripts import clean_env, console_script, default_sigint, run_setec

from setec_core.authz import Caller
from setec_core.peer import Peer
from setec_core.testing import SUPERUSER, audit_entries
from setec_core.testing.fakes import FixedAuthorizer
from setec_core.testing.server import LocalServer, new_server
from setec_plugins.policy_authz import PolicyAuthorizer

SECRET = b"ux-s3cret-never-printed-91f0"

ROOT = Path(__file__).resolve().parents[2]


def setec(
    *args: str, server: str | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` against ``server``; never a traceback."""
    return run_setec(*args, server=server, stdin=stdin)


_names = itertools.count()


@pytest.fixture
def name() -> str:
    """A secret name no other test uses."""
    return f"ux/secret-{next(_names)}"


# --- --version ---------------------------------------------------------------------------


def test_version_flag_prints_what_the_version_command_prints() -> None:
    """``setec --version`` and ``setec version`` print the same line and exit 0."""
    flag = setec("--version")
    command = setec("version")
    expected = f"setec (pysetec) {metadata.version('pysetec')}\n".encode()
    assert (flag.returncode, flag.stdout, flag.stderr) == (0, expected, b"")
    assert (command.returncode, command.stdout) == (0, expected)


# --- get --json and get -o -----------------------------------------------------------------


def test_get_json_text_and_binary(server: LocalServer, name: str) -> None:
    """``get --json``: UTF-8 text is "value"; anything else is "value_base64" instead."""
    client = server.client()
    client.put(name, "caf\u00e9 \u2603".encode())
    client.put(name, b"\x00\xff\xfe")
    text = setec("get", "--json", name, server=server.url)
    assert text.returncode == 0, text.stderr
    assert text.stdout.endswith(b"}\n")
    assert json.loads(text.stdout) == {"name": name, "version": 1, "value": "caf\u00e9 \u2603"}
    binary = setec("get", name, "--version", "2", "--json", server=server.url)
    assert json.loads(binary.stdout) == {"name": name, "version": 2, "value_base64": "AP/+"}


def test_get_output_writes_a_private_file(server: LocalServer, name: str, tmp_path: Path) -> None:
    """``get -o PATH``: the exact bytes in a 0600 file, nothing on stdout, one line on
    stderr naming the secret and version (never the value); -q silences the line."""
    server.client().put(name, SECRET + b"\n")
    out = tmp_path / "value"
    out.write_bytes(b"old")
    out.chmod(0o644)
    proc = setec("get", name, "-o", str(out), server=server.url)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert proc.stderr == f'Wrote "{name}" version 1 to "{out}"\n'.encode()
    assert out.read_bytes() == SECRET + b"\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    quiet = setec("-q", "get", name, "--json", "--output", str(out), server=server.url)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")
    assert json.loads(out.read_bytes())["value"] == (SECRET + b"\n").decode()
    assert [p.name for p in tmp_path.iterdir()] == ["value"]  # no temporary file left


def test_get_output_replaces_a_symlink_never_follows_it(
    server: LocalServer, name: str, tmp_path: Path
) -> None:
    """``get -o LINK``: the link is replaced by the new file; its target is untouched."""
    server.client().put(name, SECRET)
    target = tmp_path / "someone-elses-file"
    target.write_text("precious")
    link = tmp_path / "out"
    link.symlink_to(target)
    proc = setec("get", name, "-o", str(link), server=server.url)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "precious"
    assert not link.is_symlink()
    assert link.read_bytes() == SECRET


def test_get_output_refuses_a_directory(server: LocalServer, name: str, tmp_path: Path) -> None:
    """``get -o DIR`` is refused with a message saying it is a directory, and writes
    nothing there."""
    server.client().put(name, SECRET)
    proc = setec("get", name, "-o", str(tmp_path), server=server.url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert (
        proc.stderr
        == (
            f'Error: cannot write "{tmp_path}": it is a directory; give the path of a file to '
            "write (it is created, or replaced if it exists)\n"
        ).encode()
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command", [("get", "{name}"), ("export", "--prefix", "{prefix}", "--format", "json")]
)
def test_output_that_cannot_be_written_fetches_nothing(
    server: LocalServer, name: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """``get -o`` and ``export -o`` into a missing directory, or through a file, are
    refused as ``inject -o`` refuses them, before anything is fetched (a fetch would be
    audited as a successful read of a value that went nowhere)."""
    server.client().put(name, SECRET)
    args = [arg.format(name=name, prefix=name.rpartition("/")[0]) for arg in command]
    a_file = tmp_path / "file"
    a_file.write_text("")
    before = len(audit_entries(server.db))
    missing = setec(*args, "-o", f"{tmp_path}/no/out", server=server.url)
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        1,
        b"",
        f'Error: cannot write "{tmp_path}/no/out": the directory "{tmp_path}/no" does not '
        "exist; create it first\n".encode(),
    )
    through = setec(*args, "-o", f"{a_file}/out", server=server.url)
    assert (through.returncode, through.stderr) == (
        1,
        f'Error: cannot write "{a_file}/out": "{a_file}" is not a directory\n'.encode(),
    )
    assert audit_entries(server.db)[before:] == []


# --- list PREFIX -------------------------------------------------------------------------


def test_list_prefix_filters_table_and_json() -> None:
    """``list PREFIX`` shows only names starting with PREFIX, as a table or JSON."""
    with new_server() as fresh:
        client = fresh.client()
        for secret in ("prod/db", "prod/api", "production", "dev/db"):
            client.put(secret, b"x")
        fresh.db._accessed.clear()  # no last access (docs/api.md §9.5): Go's columns
        table = setec("list", "prod/", server=fresh.url)
        assert table.stdout == (b"NAME     ACTIVE VERSIONS\nprod/api 1      1\nprod/db  1      1\n")
        as_json = setec("list", "--json", "prod", server=fresh.url)
        assert [s["name"] for s in json.loads(as_json.stdout)] == [
            "prod/api",
            "prod/db",
            "production",
        ]
        none = setec("list", "nothing/", server=fresh.url)
        assert (none.returncode, none.stdout) == (0, b"NAME ACTIVE VERSIONS\n")


# --- -q ----------------------------------------------------------------------------------


def test_quiet_silences_information_not_errors(server: LocalServer, name: str) -> None:
    """-q (before or after the command) drops "Read N bytes from stdin"; an error still
    prints."""
    before = setec("-q", "put", name, server=server.url, stdin=b"one")
    after = setec("put", name, "--quiet", server=server.url, stdin=b"two")
    assert (before.returncode, before.stderr) == (0, b"")
    assert (after.returncode, after.stderr) == (0, b"")
    assert before.stdout == f'Secret saved as "{name}", version 1\n'.encode()
    failed = setec("-q", "get", "ux/missing", server=server.url)
    assert (failed.returncode, failed.stderr) == (1, b"Error: failed to get secret: not found\n")


# --- delete --yes and what deletes report -------------------------------------------------


def test_delete_yes_needs_no_token_and_reports_on_stderr(server: LocalServer, name: str) -> None:
    """``delete --yes`` deletes without a token; stdout stays empty (as in Go) and
    stderr names what went; -q silences it."""
    client = server.client()
    client.put(name, b"1")
    client.put(name, b"2")
    proc = setec("delete", "--yes", name, server=server.url)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert proc.stderr == f'Deleted secret "{name}" (versions 1, 2)\n'.encode()
    assert name not in [info.name for info in client.list()]
    client.put(name, b"again")
    quiet = setec("-q", "delete", "-y", name, server=server.url)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")
    assert name not in [info.name for info in client.list()]


def test_delete_of_a_missing_secret_says_so(server: LocalServer) -> None:
    """Deleting a secret that does not exist succeeds as in Go, and says nothing was
    deleted."""
    proc = setec("delete", "--yes", "ux/never-was", server=server.url)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert proc.stderr == b'Secret "ux/never-was" does not exist; nothing was deleted\n'


def test_delete_version_yes(server: LocalServer, name: str) -> None:
    """``delete-version --yes`` deletes an inactive version without a token and says so."""
    client = server.client()
    client.put(name, b"1")
    client.put(name, b"2")
    proc = setec("delete-version", name, "2", "--yes", server=server.url)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert proc.stderr == f'Deleted version 2 of secret "{name}"\n'.encode()
    assert client.info(name).versions == (1,)


def test_delete_without_yes_still_wants_the_token(server: LocalServer, name: str) -> None:
    """Without --yes the Go confirmation token is still required, and nothing goes."""
    server.client().put(name, b"1")
    proc = setec("delete", name, server=server.url)
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"Error: confirmation required for ")
    assert server.client().info(name).versions == (1,)


# --- the server's reason -------------------------------------------------------------------


def test_access_denied_shows_the_servers_reason(tmp_path: Path) -> None:
    """A policy server's 403 reason reaches the user after Go's prefix."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tokens": []}))
    with new_server(authorizer=PolicyAuthorizer(str(policy))) as guarded:
        proc = setec("get", "a", server=guarded.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1,
        b"",
        b"Error: failed to get secret: access denied: missing or unknown bearer token\n",
    )


@contextlib.contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """A loopback HTTP server answering every request with ``status`` and ``body``;
    yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (403, "access denied: \\x1b]0;pwned\\a\\x1b[2J \\u009b2J \\u202e"),
        (404, "not found: \\x1b]0;pwned\\a\\x1b[2J \\u009b2J \\u202e"),
        (500, 'request returned status 500: "\\x1b]0;pwned\\a\\x1b[2J \\u009b2J \\u202e"'),
    ],
)
def test_a_servers_reason_cannot_drive_the_terminal(status: int, said: str) -> None:
    """A server's reason holding terminal escapes (retitle the window, clear the
    screen, C1's CSI, a right-to-left override) reaches stderr escaped, as text."""
    body = "\x1b]0;pwned\x07\x1b[2J \u009b2J \u202e\n".encode()
    with answering(status, body) as url:
        proc = setec("get", "a", server=url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr == f"Error: failed to get secret: {said}\n".encode()
    assert proc.stderr.decode().rstrip("\n").isprintable()


# --- first mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("put", "ux/x", "hunter2"),
            "setec put takes one NAME; the value comes from standard input or --from-file, "
            "never the command line (it would land in shell history)",
        ),
        (
            ("create-version", "ux/x", "3", "hunter2"),
            "setec create-version takes NAME VERSION; the value comes from standard input "
            "or --from-file, never the command line (it would land in shell history)",
        ),
        (("put",), 'wrong number of arguments for "put": got 0, want 1'),
        (("list", "a", "b"), 'extra arguments after command "list": ["a" "b"]'),
    ],
)
def test_value_on_the_command_line_is_explained(
    server: LocalServer, args: tuple[str, ...], message: str
) -> None:
    """A value given as an argument is a usage error saying where values come from
    (and is never echoed); other wrong counts keep Go's message."""
    proc = setec(*args, server=server.url)
    assert (proc.returncode, proc.stdout) == (2, b"")
    assert proc.stderr.endswith(f"Error: {message}\n".encode())
    assert "ux/x" not in [info.name for info in server.client().list()]


def test_import_of_a_missing_file_says_so_first(server: LocalServer, tmp_path: Path) -> None:
    """``import /no/such/file`` says the file cannot be read, whether or not --prefix is
    given, before any complaint about the format or the prefix."""
    missing = tmp_path / "nope"
    expected = (
        f'Error: cannot read "{missing}": No such file or directory; '
        "check the path and that you may read the file\n"
    ).encode()
    for args in (("import", str(missing)), ("import", str(missing), "--prefix", "ux/i")):
        proc = setec(*args, server=server.url)
        assert (proc.returncode, proc.stderr) == (1, expected), args
    present = tmp_path / "app.env"
    present.write_text("K=v\n")
    no_prefix = setec("import", str(present), server=server.url)
    assert no_prefix.returncode == 2
    assert no_prefix.stderr.endswith(b"Error: Missing option '--prefix'.\n")
    unnamed = tmp_path / "secrets.txt"
    unnamed.write_text("K=v\n")
    no_format = setec("import", str(unnamed), "--prefix", "ux/i", server=server.url)
    assert no_format.returncode == 2
    assert no_format.stderr.endswith(
        f'Error: cannot tell the format of "{unnamed}" from its name; '
        "pass --format env or --format json\n".encode()
    )


class StallingAuthorizer(FixedAuthorizer):
    """Every caller is ``caller``; the ``stall_at``-th request waits until released."""

    def __init__(self, caller: Caller, stall_at: int) -> None:
        super().__init__(caller)
        self.stall_at = stall_at
        self.stalled = threading.Event()
        self.release = threading.Event()

    def identify(self, peer: Peer) -> Caller:
        """Return the caller, after waiting for :attr:`release` on the stalled request."""
        caller = super().identify(peer)
        if self.identified == self.stall_at:
            self.stalled.set()
            self.release.wait(30)
        return caller


def test_interrupted_import_says_how_far_it_got_and_how_to_finish(tmp_path: Path) -> None:
    """Ctrl-C during an import says how many secrets were imported and that running the
    same command again finishes the job; running it again does."""
    source = tmp_path / "app.env"
    source.write_text("".join(f"K{i}=value-{i}\n" for i in range(5)))
    # Request 1 is the list; 2 and 3 put K0 and K1; the put of K2 stalls.
    authorizer = StallingAuthorizer(SUPERUSER, stall_at=4)
    with new_server(authorizer=authorizer) as stalling:
        try:
            proc = subprocess.Popen(
                [console_script("setec"), "import", str(source), "--prefix", "ux/ctrl-c"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean_env(stalling.url),
                preexec_fn=default_sigint,
            )
            assert authorizer.stalled.wait(30), "the import never reached the third put"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert (proc.returncode, out) == (1, b"")
            assert err == (
                b"Interrupted after importing 2 of 5 secrets (the one being written may "
                b"have been stored too). Run the same command again to finish: values "
                b"already stored are left as they are.\nAborted!\n"
            )
            again = setec("import", str(source), "--prefix", "ux/ctrl-c", server=stalling.url)
            assert again.returncode == 0, again.stderr
            assert (
                again.stdout
                == (
                    f'Imported 5 secrets from "{source}" under "ux/ctrl-c/" '
                    "(3 created, 0 new versions, 2 unchanged)\n"
                ).encode()
            )
            client = stalling.client()
            assert {i.name: client.get(i.name).value for i in client.list()} == {
                f"ux/ctrl-c/K{i}": f"value-{i}".encode() for i in range(5)
            }
        finally:
            authorizer.release.set()


# --- help and environment variables ------------------------------------------------------


def test_help_names_the_environment_variables() -> None:
    """Every option that reads a SETEC_* variable names it in --help, in the group and
    in each client command."""
    from setec_cli.setec import CLIENT_COMMANDS, cli

    commands: list[click.Command] = [cli, *(cli.commands[n] for n in sorted(CLIENT_COMMANDS))]
    for command in commands:
        args = ["--help"] if command is cli else [command.name or "", "--help"]
        result = CliRunner().invoke(cli, args, env={"SETEC_SERVER": None})
        assert result.exit_code == 0, result.output
        help_text = " ".join(result.output.split())
        for param in command.params:
            envvars = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
            for var in filter(None, envvars):
                assert f"${var}" in help_text, (command.name, param.name)
        if any(p.name == "token_file" for p in command.params):
            assert "$SETEC_TOKEN" in help_text, command.name
        if any(p.name == "server" for p in command.params):
            assert "$SETEC_SERVER" in help_text, command.name


#: The modules the ``setec`` client commands run (``setec server`` is documented in
#: docs/server.md).
CLIENT_MODULES = (
    "setec.py",
    "options.py",
    "commands.py",
    "value.py",
    "confirm.py",
    "formats.py",
    "transfer.py",
    "dotenv.py",
    "run.py",
    "private_file.py",
    "version.py",
)


def test_every_client_environment_variable_is_documented() -> None:
    """docs/cli.md's table of environment variables has every SETEC_* variable the
    client commands read."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    table = doc.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(SETEC_[A-Z_]+)`", table, re.MULTILINE))
    read: set[str] = set()
    for module in CLIENT_MODULES:
        read |= set(
            re.findall(r"\bSETEC_[A-Z][A-Z_]*\b", (ROOT / "setec_cli" / module).read_text())
        )
    assert read, "no SETEC_* variable found: the scan is broken"
    assert read <= documented, sorted(read - documented)
