"""The ``setec`` commands of recoverable delete (docs/cli.md, "Recoverable delete"):
``delete`` says when a secret was put aside and how to undo it, ``delete --purge``
needs its own confirmation token, ``undelete`` brings a secret back, ``list --deleted``
shows when each goes; against a server without the extension each says so in one
line. Also ``setec-serve --recovery-window``'s durations."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import click
import pytest
from console_scripts import run_setec

from setec_cli.confirm import confirmation_token
from setec_cli.duration import Duration, format_duration, parse_duration
from setec_core.testing import SUPERUSER
from setec_core.testing.server import LocalServer, new_server
from setec_core.wire import Extensions

SECRET = b"undelete-cli-value-4d2a"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server keeping deleted secrets for a day; every caller a superuser."""
    with new_server() as s:
        s.db.recovery_window = 86400
        yield s


def setec(*args: str, server: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` against ``server``; never a traceback."""
    return run_setec(*args, server=server, stdin=b"")


def clear_of_token_boundary() -> None:
    """Wait past a confirmation token's change of minute if it is seconds away."""
    until_boundary = (1.0 - time.time() % 60) % 60
    if until_boundary < 3:
        time.sleep(until_boundary + 0.1)


def test_delete_puts_aside_and_undelete_brings_back(server: LocalServer) -> None:
    """delete says on stderr until when the secret is kept and how to get it back;
    list --deleted (table and JSON) shows it; undelete restores it."""
    server.client().put("app/k", SECRET)
    deleted = setec("delete", "--yes", "app/k", server=server.url)
    purge_at = server.db.list_deleted(SUPERUSER)[0].purge_at.replace(microsecond=0)
    when = purge_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (deleted.returncode, deleted.stdout) == (0, b"")
    assert deleted.stderr.decode() == (
        f'Deleted secret "app/k" (version 1); the server keeps it until {when}: '
        "'setec undelete \"app/k\"' brings it back, 'setec delete --purge \"app/k\"' "
        "deletes it now\n"
    )
    table = setec("list", "--deleted", server=server.url)
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "ACTIVE", "VERSIONS", "DELETED", "PURGED", "AT"]
    assert lines[1].split()[:3] == ["app/k", "1", "1"]
    assert lines[1].split()[4] == when
    as_json = json.loads(setec("list", "--deleted", "--json", "app/", server=server.url).stdout)
    assert [(s["name"], s["versions"], s["active_version"]) for s in as_json] == [("app/k", [1], 1)]
    assert setec("list", server=server.url).stdout.decode().splitlines()[1:] == []
    back = setec("undelete", "app/k", server=server.url)
    assert (back.returncode, back.stderr) == (0, b'Undeleted secret "app/k"\n')
    assert server.client().get("app/k").value == SECRET
    again = setec("undelete", "app/k", server=server.url)
    assert again.returncode == 1
    assert again.stderr == (
        b"Error: failed to undelete secret \"app/k\": not found; 'setec list --deleted' "
        b"lists the secrets that can be brought back\n"
    )
    assert SECRET not in deleted.stderr + table.stdout + back.stderr


def test_purge_needs_its_own_token_and_removes_a_pending_secret(server: LocalServer) -> None:
    """A plain delete's token does not confirm --purge; the purge token does, and the
    secret (already put aside) is gone for good."""
    server.client().put("gone", SECRET)
    server.client().delete("gone")
    clear_of_token_boundary()
    plain = confirmation_token("delete-secret:gone")
    token = confirmation_token("purge-secret:gone")
    wrong = setec("delete", "--purge", "gone", plain, server=server.url)
    assert wrong.stderr == (
        f'Error: incorrect confirmation for "purge-secret:gone", use token "{token}"\n'.encode()
    )
    done = setec("delete", "--purge", "gone", token, server=server.url)
    assert (done.returncode, done.stderr) == (0, b'Deleted secret "gone" (version 1)\n')
    assert server.client().list_deleted() == []


def test_against_a_server_without_the_extension_each_says_so() -> None:
    """undelete, list --deleted and delete --purge against a server that does not
    offer recoverable-delete: exit 1, one line saying so, nothing sent."""
    with new_server() as server:
        server.app.extensions = Extensions(())  # offers nothing, as a Go server
        for args in (
            ("undelete", "x"),
            ("list", "--deleted"),
            ("delete", "--purge", "--yes", "x"),
        ):
            result = setec(*args, server=server.url)
            lines = result.stderr.decode().splitlines()
            assert result.returncode == 1, args
            assert len(lines) == 1, lines
            assert "does not offer" in lines[0]
            assert "nothing was sent" in lines[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("7d", 604800), ("12h", 43200), ("30m", 1800), ("90s", 90), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    """The forms --recovery-window takes, and their spelling back."""
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["30", "1m1h", "", "7days", "-1h", "1e3s"])
def test_bad_durations_name_the_value_and_the_forms(text: str) -> None:
    """A bare number, units out of order, or anything else is refused with the forms."""
    with pytest.raises(click.BadParameter, match="7d, 12h, 30m"):
        Duration().convert(text, None, None)
