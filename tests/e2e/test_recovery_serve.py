"""``setec-serve --recovery-window`` end to end: a real server process keeps a deleted
secret aside, its purge job removes it when the window ends, a restart (even without a
window) keeps it pending and still purges it, and a bad duration is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

from serve_process import ServeProcess, call, run_serve

NAME = "app/recoverable"
VALUE = "cmVjb3ZlcmFibGUtZTJl"  # base64 of "recoverable-e2e"


def deleted_names(url: str) -> list[str]:
    """The names /api/list-deleted answers."""
    response = call(url, "list-deleted", {})
    assert response.status_code == 200, response.text
    return [s["Name"] for s in response.json() or []]


def test_the_purge_job_removes_a_deleted_secret_when_its_window_ends(tmp_path: Path) -> None:
    """With a two-second window the secret is listed as deleted, then gone within
    about the window (the job wakes no further apart than the window), audited."""
    args = ("--dev", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0")
    with ServeProcess(*args, "--recovery-window", "2s", cwd=tmp_path) as server:
        assert call(server.url, "put", {"Name": NAME, "Value": VALUE}).json() == 1
        assert call(server.url, "delete", {"Name": NAME}).content == b"{}"
        deleted = time.monotonic()
        assert deleted_names(server.url) == [NAME]
        assert call(server.url, "get", {"Name": NAME}).status_code == 404
        while deleted_names(server.url) and time.monotonic() - deleted < 15:
            time.sleep(0.1)
        waited = time.monotonic() - deleted
        assert deleted_names(server.url) == []
        assert waited >= 1.5, waited  # not before its time
        assert call(server.url, "undelete", {"Name": NAME}).status_code == 404
    assert "deleted secrets are kept 2s before they are purged" in server.output
    audit = (tmp_path / "s" / "audit.log").read_text()
    assert '"action":"purge"' in audit
    assert VALUE not in audit


def test_pending_secrets_survive_a_restart_and_are_still_purged(tmp_path: Path) -> None:
    """Put aside under a one-hour window; after a restart with no window the secret is
    still pending (the purge job runs for it) and undelete brings it back."""
    state = ("--dev", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0")
    with ServeProcess(*state, "--recovery-window", "1h", cwd=tmp_path) as server:
        call(server.url, "put", {"Name": NAME, "Value": VALUE})
        call(server.url, "delete", {"Name": NAME})
        before = call(server.url, "list-deleted", {}).json()
    with ServeProcess(*state, cwd=tmp_path) as server:
        assert call(server.url, "list-deleted", {}).json() == before
        assert call(server.url, "put", {"Name": NAME, "Value": VALUE}).status_code == 409
        assert call(server.url, "undelete", {"Name": NAME}).content == b"{}"
        assert call(server.url, "get", {"Name": NAME}).json() == {"Value": VALUE, "Version": 1}
        # Without a window, a delete is Go's again: gone at once.
        assert call(server.url, "delete", {"Name": NAME}).content == b"{}"
        assert deleted_names(server.url) == []
    assert "secrets deleted with an earlier --recovery-window are purged" in server.output


def test_a_bad_duration_is_refused_naming_it(tmp_path: Path) -> None:
    """A bare number is ambiguous: exit 2 naming the flag, the value and the forms;
    the environment variable is read too."""
    result = run_serve("--dev", "--recovery-window", "30", cwd=tmp_path)
    assert result.returncode == 2
    assert "--recovery-window" in result.stderr
    assert "'30' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr
    env = {**os.environ, "SETEC_RECOVERY_WINDOW": "3 weeks"}
    from_env = run_serve("--dev", cwd=tmp_path, env=env)
    assert from_env.returncode == 2
    assert "'3 weeks' is not a duration" in from_env.stderr
