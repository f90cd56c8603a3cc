"""``setec run`` and ``setec inject`` fetch their secrets with batch gets (one request
for up to 100 secrets, docs/api.md §9.3) from a server that offers them, one get each
from a Go setec server (tests/go_like_server.py), with the same output and messages.

The child of ``setec run`` never prints a value: it prints a hash of each variable.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_scripts import run_setec
from go_like_server import GoLikeServer

from setec_core.testing import SUPERUSER, FixedAuthorizer, audit_entries
from setec_core.testing.server import LocalServer

SECRET = b"batch-cli-secret-5d2a"

# The child prints the SHA-256 of each variable named in its arguments ("-" if unset).
HASH_ENV = (
    "import hashlib, os, sys\n"
    "for var in sys.argv[1:]:\n"
    "    value = os.environ.get(var)\n"
    "    print(var, '-' if value is None else hashlib.sha256(value.encode()).hexdigest())\n"
)

#: 150 secrets under app/, so that --prefix app takes two batches.
PREFIXED = {f"app/key-{i:03d}": f"value {i}".encode() for i in range(150)}


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def setec(*args: str, server: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` against ``server``; never a traceback, never the secret."""
    proc = run_setec(*args, server=server, stdin=stdin)
    assert SECRET not in proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[LocalServer, FixedAuthorizer]]:
    """A server of superusers whose authorizer counts the API requests; it holds
    PREFIXED, solo/one (SECRET), solo/two and solo/file."""
    authz = FixedAuthorizer(SUPERUSER)
    with LocalServer(authorizer=authz) as server:
        server.db.put_many(SUPERUSER, PREFIXED)
        server.db.put_many(
            SUPERUSER, {"solo/one": SECRET, "solo/two": b"two", "solo/file": b"from a file"}
        )
        yield server, authz


def _run_everything(url: str, env_file: Path) -> subprocess.CompletedProcess[bytes]:
    variables = ["ONE", "TWO", "FROM_FILE", "KEY_000", "KEY_149"]
    return setec(
        "run",
        "--secret", "ONE=solo/one",
        "--secret", "TWO=solo/two",
        "--env-file", str(env_file),
        "--prefix", "app",
        "--", sys.executable, "-c", HASH_ENV, *variables,
        server=url,
    )  # fmt: skip


def test_run_fetches_153_secrets_in_two_batches(
    counted: tuple[LocalServer, FixedAuthorizer], tmp_path: Path
) -> None:
    """--secret, --env-file and --prefix together: one list, one question of what the
    server offers, and two batch gets for 153 secrets; each audited as its get."""
    server, authz = counted
    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=solo/file\n")
    before, entries = authz.identified, len(audit_entries(server.db))
    proc = _run_everything(server.url, env_file)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [
        f"ONE {sha(SECRET)}",
        f"TWO {sha(b'two')}",
        f"FROM_FILE {sha(b'from a file')}",
        f"KEY_000 {sha(b'value 0')}",
        f"KEY_149 {sha(b'value 149')}",
    ]
    assert authz.identified - before == 4  # list, extensions, 2 x get-many
    gets = [e["secret"] for e in audit_entries(server.db)[entries:] if e["action"] == "get"]
    assert sorted(gets) == sorted(["solo/one", "solo/two", "solo/file", *PREFIXED])


def test_run_against_a_go_server_gets_each_secret(
    counted: tuple[LocalServer, FixedAuthorizer], tmp_path: Path
) -> None:
    """Against a server without get-many: the same environment, one get a secret."""
    server, _ = counted
    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=solo/file\n")
    with GoLikeServer(server.url) as go:
        proc = _run_everything(go.url, env_file)
        seen = go.seen
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == _run_everything(server.url, env_file).stdout
    assert seen == ["/api/list", "/api/extensions"] + ["/api/get"] * 153


@pytest.mark.parametrize("go", [False, True], ids=["batched", "go-server"])
def test_run_names_the_secret_that_failed(
    counted: tuple[LocalServer, FixedAuthorizer], go: bool
) -> None:
    """A missing secret among others is named as before, batch or not; the program
    does not run."""
    server, _ = counted
    args = ["run", "--secret", "A=solo/one", "--secret", "B=run/missing"]
    args += ["--secret", "C=solo/two", "--", sys.executable, "-c", "print('ran')"]
    if go:
        with GoLikeServer(server.url) as proxy:
            proc = setec(*args, server=proxy.url)
    else:
        proc = setec(*args, server=server.url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr == b'Error: failed to get secret "run/missing" for B: not found\n'


def test_run_with_a_name_the_server_refuses_names_it(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """A name over 1,024 bytes makes the server refuse the batch; setec then gets each
    secret alone, so the message is the one a get of that name gives."""
    server, _ = counted
    long_name = "x" * 1025
    proc = setec(
        "run", "--secret", "A=solo/one", "--secret", f"B={long_name}",
        "--", sys.executable, "-c", "print('ran')",
        server=server.url,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(b'Error: failed to get secret "xxxx')
    assert b"for B: request returned status 400" in proc.stderr
    assert b"names are at most 1024 bytes" in proc.stderr


@pytest.mark.parametrize("go", [False, True], ids=["batched", "go-server"])
def test_inject_fills_every_reference(
    counted: tuple[LocalServer, FixedAuthorizer], go: bool
) -> None:
    """setec inject fetches its references together (one batch get for 101 names from
    a server that offers it) and writes the same text either way."""
    server, authz = counted
    names = ["solo/two", *list(PREFIXED)[:100], "solo/two"]
    template = "".join(f'{{{{ setec "{n}" }}}}\n' for n in names).encode()
    expected = b"two\n" + b"".join(v + b"\n" for v in list(PREFIXED.values())[:100]) + b"two\n"
    before = authz.identified
    if go:
        with GoLikeServer(server.url) as proxy:
            proc = setec("inject", server=proxy.url, stdin=template)
            assert proxy.seen == ["/api/extensions"] + ["/api/get"] * 101
    else:
        proc = setec("inject", server=server.url, stdin=template)
        assert authz.identified - before == 1 + 2  # extensions, 2 x get-many
    assert (proc.returncode, proc.stdout) == (0, expected)
    assert proc.stderr == b"Injected 101 secrets into standard output\n"
