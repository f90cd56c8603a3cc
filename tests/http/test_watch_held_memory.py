"""What a waiting watch holds (docs/api.md §9.2): its names and a socket, not the body
it arrived in. A watch body may be as large as ``--max-request-bytes`` (1 MiB), and any
identified caller allowed to read one name can pad a watch of that name to the limit
and park it; were the body kept while the watch waits, a few thousand such watches
(one source may hold 2,048 connections) would take gigabytes."""

from __future__ import annotations

import gc
import socket
import tracemalloc

from watching import GUARD, PATIENCE, read_answer, watching

from setec_core.testing.server import LocalServer

#: Parked watches, each padded to about 1 MiB.
WATCHES = 12
PAD = 1024 * 1024 - 200


def _padded_watch(url: str) -> socket.socket:
    # One name at the version the caller holds (0: it does not exist), padded with a
    # key the server ignores, as Go's decoder does.
    host, port = url.removeprefix("http://").split(":")
    body = b'{"Secrets":[{"Name":"app/none","Version":0}],"Pad":"%s"}' % (b"x" * PAD)
    head = "".join(f"{k}: {v}\r\n" for k, v in GUARD.items())
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    sock.sendall(
        b"POST /api/watch HTTP/1.1\r\nHost: localhost\r\n%sContent-Length: %d\r\n\r\n%s"
        % (head.encode(), len(body), body)
    )
    return sock


def test_a_waiting_watch_does_not_keep_its_request_body() -> None:
    """Twelve parked watches of 1 MiB bodies hold far less than one of those bodies
    each (before the fix, two copies of each body stayed for the watch's lifetime)."""
    with LocalServer(app_options={"watch_timeout_cap": 60}) as server:
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            socks = [_padded_watch(server.url) for _ in range(WATCHES)]
            watching(server.url, WATCHES)
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        try:
            assert held - before < WATCHES * PAD // 4, (
                f"{WATCHES} waiting watches hold {(held - before) / 2**20:.1f} MiB"
            )
            server.client().put("app/none", b"now it exists")
            for sock in socks:
                status, answer = read_answer(sock)
                assert (status, answer) == (200, {"Changed": [{"Name": "app/none", "Version": 1}]})
        finally:
            for sock in socks:
                sock.close()
