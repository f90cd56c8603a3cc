"""Helpers for tests of ``/api/watch`` (docs/api.md §9.2): watches sent with requests
or on raw sockets, waiting on a thread, and the server's watch gauge."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
#: Seconds any wait in these tests may take before it counts as hung: generous, so a
#: slow machine never fails them; what they check never depends on it.
PATIENCE = 20.0


def watch(url: str, secrets: dict[str, int], timeout: int | None = None) -> requests.Response:
    """POST a watch of ``secrets`` (name -> version held) to the server at ``url``."""
    body: dict[str, Any] = {"Secrets": [{"Name": n, "Version": v} for n, v in secrets.items()]}
    if timeout is not None:
        body["Timeout"] = timeout
    return requests.post(f"{url}/api/watch", json=body, headers=GUARD, timeout=PATIENCE + 60)


def changed(response: requests.Response) -> Any:
    """The ``Changed`` of a 200 answer."""
    assert response.status_code == 200, response.text
    return response.json()["Changed"]


def metric(url: str, name: str, session: requests.Session | None = None) -> float:
    """The unlabelled metric ``name`` on the server's ``/metrics`` (through ``session``,
    whose kept-alive connection reaches one worker of several, if given)."""
    text = (session or requests).get(f"{url}/metrics", timeout=PATIENCE).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"no {name} in /metrics"
    return float(found.group(1))


def until(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` holds, failing after :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def watching(url: str, count: int) -> None:
    """Wait until the server holds ``count`` watches."""
    until(lambda: metric(url, "setec_watches") == count, f"{count} watches held")


class Background:
    """A watch run on a thread; :attr:`done` is set once it is answered."""

    def __init__(self, url: str, secrets: dict[str, int], timeout: int | None = None) -> None:
        self.done = threading.Event()
        self.response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(url, secrets, timeout))
        self._thread.start()

    def _run(self, url: str, secrets: dict[str, int], timeout: int | None) -> None:
        try:
            self.response = watch(url, secrets, timeout)
        finally:
            self.done.set()

    def result(self) -> Any:
        """The ``Changed`` of its answer, once it came."""
        assert self.done.wait(PATIENCE), "the watch was not answered"
        self._thread.join()
        assert self.response is not None
        return changed(self.response)


def raw_watch(url: str, secrets: dict[str, int], timeout: int = 0) -> socket.socket:
    """Send a watch on a socket of its own and return the socket, unread."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(
        {"Secrets": [{"Name": n, "Version": v} for n, v in secrets.items()], "Timeout": timeout}
    ).encode()
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    sock.sendall(
        b"POST /api/watch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Sec-X-Tailscale-No-Browsers: setec\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def read_answer(sock: socket.socket) -> tuple[int, Any]:
    """Read one answer from ``sock``: its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the body"
        body += chunk
    assert len(body) == length, "more than one answer"
    return int(head.split()[1]), json.loads(body)
