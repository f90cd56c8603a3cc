"""``/api/watch`` (docs/api.md §9.2) across real ``setec-serve`` processes: a change
written through one worker of ``--workers 2``, or through one replica over PostgreSQL,
wakes the watches held by the others; SIGTERM answers waiting watches at once; and
``--max-watches`` and ``--watch-timeout-cap`` (and their environment variables) apply."""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

import requests
from replica_process import eventually, replicas
from serve_process import GUARD, ServeProcess
from watching import (
    PATIENCE,
    Background,
    changed,
    metric,
    raw_watch,
    read_answer,
    until,
    watch,
    watching,
)

from setec_core.errors import NotFound


def dev_args(state: Path, *extra: str) -> tuple[str, ...]:
    """--dev on ``state``, on a free loopback port."""
    return ("--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0", *extra)


def post(session: requests.Session, url: str, method: str, body: dict[str, object]) -> object:
    """POST ``body`` to ``/api/METHOD`` through ``session``; its JSON answer."""
    response = session.post(f"{url}/api/{method}", json=body, headers=GUARD, timeout=PATIENCE)
    assert response.status_code == 200, response.text
    return response.json()


def sessions_per_worker(url: str, logs: list[Path]) -> list[requests.Session]:
    """A kept-alive session on each worker, found by the audit log (one per worker)
    that a get through it lands in."""
    found: dict[int, requests.Session] = {}
    for _ in range(200):
        session = requests.Session()
        probe = f"probe/{secrets.token_hex(8)}"
        response = session.post(
            f"{url}/api/get", json={"Name": probe}, headers=GUARD, timeout=PATIENCE
        )
        assert response.status_code == 404
        index = next(i for i, log in enumerate(logs) if probe in log.read_text())
        if index in found:
            session.close()
        else:
            found[index] = session
        if len(found) == len(logs):
            return [found[i] for i in range(len(logs))]
    raise AssertionError("the kernel never gave a connection to every worker")


def test_a_change_through_one_worker_wakes_watches_on_the_other(tmp_path: Path) -> None:
    """Watches held by both workers of --workers 2 are all answered when a secret is
    put and activated through worker 0: worker 1's as soon as it reads the commit."""
    state = tmp_path / "state"
    with ServeProcess("--workers", "2", *dev_args(state), cwd=tmp_path) as server:
        until(lambda: "(2 workers)" in server.output, "both workers serve")
        logs = [state / "audit.log", state / "workers" / "1" / "audit.log"]
        workers = sessions_per_worker(server.url, logs)
        url = server.url
        assert post(workers[0], url, "put", {"Name": "app/a", "Value": "djE="}) == 1
        # Both workers know version 1 before anyone watches it.
        for session in workers:
            until(
                lambda s=session: (
                    s.post(  # type: ignore[misc]
                        f"{url}/api/get", json={"Name": "app/a"}, headers=GUARD, timeout=PATIENCE
                    ).status_code
                    == 200
                ),
                "each worker serves app/a",
            )

        def held() -> list[float]:
            return [metric(url, "setec_watches", session) for session in workers]

        socks: list[socket.socket] = []
        try:
            # New connections land on either worker: open them until each holds some.
            while min(held()) < 3:
                assert len(socks) < 200, held()
                socks.append(raw_watch(url, {"app/a": 1}))
                until(lambda: sum(held()) == len(socks), f"{len(socks)} watches held")
            assert post(workers[0], url, "put", {"Name": "app/a", "Value": "djI="}) == 2
            post(workers[0], url, "activate", {"Name": "app/a", "Version": 2})
            for sock in socks:
                assert read_answer(sock) == (200, {"Changed": [{"Name": "app/a", "Version": 2}]})
            until(lambda: held() == [0, 0], "every watch freed")
        finally:
            for sock in socks:
                sock.close()
            for session in workers:
                session.close()
        assert server.stop() == 0


def test_a_change_through_one_replica_wakes_a_watch_on_another(
    tmp_path: Path, postgres_uri: str
) -> None:
    """A watch held by replica beta is answered when replica alpha activates a new
    version, and when alpha deletes the secret (version 0), within a second or so."""
    with replicas(tmp_path, postgres_uri, "alpha", "beta") as (alpha, beta):
        writer = alpha.client()
        writer.put("app/a", b"1")
        eventually(lambda: beta.client().get("app/a").version, within=PATIENCE, what="beta")
        waiting = Background(beta.url, {"app/a": 1})
        watching(beta.url, 1)
        writer.put("app/a", b"2")
        writer.activate("app/a", 2)
        activated = time.monotonic()
        assert waiting.result() == [{"Name": "app/a", "Version": 2}]
        woke = time.monotonic() - activated
        waiting = Background(beta.url, {"app/a": 2})
        watching(beta.url, 1)
        writer.delete("app/a")
        assert waiting.result() == [{"Name": "app/a", "Version": 0}]
        try:
            beta.client().get("app/a")
        except NotFound:
            pass
        else:
            raise AssertionError("beta still serves the deleted secret")
        # The follower's promise (docs/replicas.md), with room for a loaded machine.
        assert woke < 5, woke


def test_sigterm_answers_waiting_watches_at_once(tmp_path: Path) -> None:
    """SIGTERM answers every waiting watch ``{"Changed": null}`` and the server exits
    cleanly, rather than waiting out their hour-long timeout (or its own drain limit,
    which would cut them off unanswered)."""
    args = dev_args(tmp_path / "state", "--watch-timeout-cap", "3600")
    with ServeProcess(*args, cwd=tmp_path) as server:
        socks = [raw_watch(server.url, {f"app/{i}": 0}) for i in range(5)]
        try:
            watching(server.url, 5)
            assert server.stop() == 0
            for sock in socks:
                assert read_answer(sock) == (200, {"Changed": None})
        finally:
            for sock in socks:
                sock.close()
        assert "stopped: in-flight requests finished" in server.output


def test_max_watches_and_the_timeout_cap_come_from_flags_or_environment(tmp_path: Path) -> None:
    """SETEC_MAX_WATCHES=1 refuses a second watch with 503 and Retry-After;
    --watch-timeout-cap 1 answers the first ``null`` after about a second, however long
    it asked for."""
    args = dev_args(tmp_path / "state", "--watch-timeout-cap", "1")
    with ServeProcess(*args, cwd=tmp_path, env={"SETEC_MAX_WATCHES": "1"}) as server:
        first = Background(server.url, {"app/a": 0}, timeout=3600)
        watching(server.url, 1)
        refused = watch(server.url, {"app/b": 0})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit()
        assert refused.text.startswith("too many watches on this server (1); retry after ")
        assert first.result() is None
        assert changed(watch(server.url, {"app/b": 0}, 1)) is None
        assert metric(server.url, "setec_watches_refused_total") == 1
        assert server.stop() == 0
