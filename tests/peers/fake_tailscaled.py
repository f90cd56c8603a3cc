"""A fake tailscaled LocalAPI (whois and status) on a unix socket, for tests.

It mirrors tailscale's ``ipn/localapi/localapi.go``:
the Host must be ``local-tailscaled.sock`` (or empty), a request with ``Referer`` or
``Origin`` is 403 ``invalid localapi request``, a missing ``addr`` is 400, a bad one 400,
and an unknown peer 404 ``no match for IP:port``. Answers are tab-indented JSON shaped
like ``apitype.WhoIsResponse``. Peers are keyed by IP, so the port is accepted and
ignored, as a real tailscaled does for TCP peers.

:attr:`FakeTailscaled.mode` injects faults: ``"error"`` answers 500, ``"denied"`` 403
``whois access denied`` (what a user without access to the socket gets), ``"hangup"``
closes the connection without answering, ``"garbage"`` answers 200 with a body that is
not JSON, ``"slow"`` waits until :attr:`FakeTailscaled.release` is set.

:meth:`FakeTailscaled.serve_headers` returns the headers ``tailscale serve`` would add
for a peer, for the ``tailscale-serve`` authorizer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class FakeTailscaled:
    """A WSGI app answering LocalAPI requests about the peers added with :meth:`add_peer`."""

    def __init__(self) -> None:
        self.peers: dict[str, dict[str, Any]] = {}
        self.mode = "ok"
        self.release = threading.Event()
        #: (method, path with query, headers) of every request received.
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def add_peer(
        self,
        ip: str,
        login: str = "",
        *,
        display: str = "",
        node_name: str = "laptop.tail1234.ts.net.",
        tags: Iterable[str] = (),
        caps: Mapping[str, list[Any]] | None = None,
        user_id: int = 1,
    ) -> None:
        """Add a peer at ``ip``. A tagged peer gets the placeholder "tagged-devices"
        profile, as tailscaled reports it; ``caps`` is its CapMap."""
        tag_list = list(tags)
        n = len(self.peers)
        self.peers[str(ipaddress.ip_address(ip))] = {
            "Node": {
                "ID": 1000 + n,
                "StableID": f"n{n}CNTRL",
                "Name": node_name,
                "User": user_id,
                "Key": f"nodekey:{n:064x}",
                "Addresses": [f"{ip}/32" if ":" not in ip else f"{ip}/128"],
                "ComputedName": node_name.split(".")[0],
                "MachineAuthorized": True,
                "Online": True,
            },
            "UserProfile": {
                "ID": user_id,
                "LoginName": "tagged-devices" if tag_list else login,
                "DisplayName": "Tagged Devices" if tag_list else display,
                "ProfilePicURL": "",
            },
            "CapMap": dict(caps) if caps else None,
        }
        if tag_list:  # Go's tailcfg.Node has Tags `json:",omitempty"`
            self.peers[str(ipaddress.ip_address(ip))]["Node"]["Tags"] = tag_list

    def serve_headers(
        self, ip: str, accept_caps: Iterable[str] = ("tailscale.com/cap/secrets",)
    ) -> dict[str, str]:
        """Return the headers ``tailscale serve --accept-app-caps=...`` adds to a request
        from ``ip``: X-Forwarded-For always; identity only for untagged peers; the app
        capabilities header when caps are accepted and the peer has some."""
        headers = {"X-Forwarded-For": ip, "X-Forwarded-Proto": "https"}
        peer = self.peers[str(ipaddress.ip_address(ip))]
        if not peer["Node"].get("Tags"):
            profile = peer["UserProfile"]
            headers["Tailscale-User-Login"] = go_q_encode(profile["LoginName"])
            headers["Tailscale-User-Name"] = go_q_encode(profile["DisplayName"])
            headers["Tailscale-Headers-Info"] = "https://tailscale.com/s/serve-headers"
        cap_map = peer["CapMap"] or {}
        accepted = {cap: cap_map[cap] for cap in accept_caps if cap in cap_map}
        if list(accept_caps) and cap_map:
            # Go's json.Marshal: sorted keys, compact, UTF-8 left as is.
            body = json.dumps(accepted, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
            headers["Tailscale-App-Capabilities"] = go_q_encode(body)
        return headers

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        req = Request(environ)
        self.requests.append((req.method, req.full_path, dict(req.headers)))

        def reply(
            code: int, text: str, content_type: str = "text/plain; charset=utf-8"
        ) -> Iterable[bytes]:
            return Response(text, code, content_type=content_type)(environ, start_response)

        if (
            req.referrer
            or req.headers.get("Origin")
            or req.host not in ("", "local-tailscaled.sock")
        ):
            return reply(403, "invalid localapi request\n")
        if self.mode == "error":
            return reply(500, "internal error: backend is broken\n")
        if self.mode == "garbage":
            return reply(200, "<html>not json</html>", "application/json")
        if self.mode == "denied":  # the server's user may not read tailscaled's socket
            return reply(403, "whois access denied\n")
        if self.mode == "hangup":
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            return reply(200, "")
        if self.mode == "slow":
            self.release.wait(10)
        if req.path == "/localapi/v0/whois":
            return self._whois(req, reply)
        if req.path == "/localapi/v0/status":
            status = {"Version": "fake", "BackendState": "Running", "Self": {}, "Peer": {}}
            return reply(200, json.dumps(status, indent="\t"), "application/json")
        return reply(404, "404 page not found\n")

    def _whois(self, req: Request, reply: Callable[..., Iterable[bytes]]) -> Iterable[bytes]:
        addr = req.args.get("addr")
        if not addr:
            return reply(400, "missing 'addr' parameter\n")
        # Like netip.ParseAddr, then netip.ParseAddrPort: "IP", "IP:port" or "[v6]:port".
        try:
            host = str(ipaddress.ip_address(addr))
        except ValueError:
            head, sep, port = addr.rpartition(":")
            if not sep or not port.isdigit() or (":" in head and not head.startswith("[")):
                return reply(400, "invalid 'addr' parameter\n")
            try:
                host = str(ipaddress.ip_address(head.removeprefix("[").removesuffix("]")))
            except ValueError:
                return reply(400, "invalid 'addr' parameter\n")
        peer = self.peers.get(host)
        if peer is None:
            return reply(404, "no match for IP:port\n")
        return reply(200, json.dumps(peer, indent="\t") + "\n", "application/json")


def go_q_encode(text: str) -> str:
    """Encode ``text`` as Go's ``mime.QEncoding.Encode("utf-8", text)`` does: unchanged
    if it is printable ASCII, else RFC 2047 Q encoded words of at most 75 characters."""
    if all(" " <= c <= "~" or c == "\t" for c in text):
        return text
    max_content = 75 - len("=?utf-8?q?") - len("?=")
    words: list[str] = []
    current = ""
    for char in text:
        if " " <= char <= "~" and char not in "=?_":
            piece = "_" if char == " " else char
        else:
            piece = "".join(f"={b:02X}" for b in char.encode("utf-8"))
        if len(current) + len(piece) > max_content:
            words.append(current)
            current = ""
        current += piece
    words.append(current)
    return " ".join(f"=?utf-8?q?{w}?=" for w in words)


@contextmanager
def running(fake: FakeTailscaled, path: str) -> Iterator[BaseWSGIServer]:
    """Serve ``fake`` on the unix socket ``path`` in a thread for the ``with`` block."""
    if os.path.exists(path):
        os.unlink(path)
    server = make_server(f"unix://{path}", 0, fake, threaded=True)
    # A short poll interval makes shutdown() return in milliseconds, not half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
