"""Confirmation tokens for ``setec delete`` and ``setec delete-version`` (Go's algorithm).

A token is not a security feature: it ties a deletion to one request and to the current
minute, so that a command pasted from old history or a script does not delete anything.
The algorithm is Go setec's, unchanged, so a token printed by either CLI works in the
other.
"""

from __future__ import annotations

import hashlib
import time

from setec_cli.formats import go_quote


def delete_secret_request(name: str) -> str:
    """The request string a token for ``setec delete NAME`` is made from."""
    return f"delete-secret:{name}"


def delete_version_request(name: str, version: int) -> str:
    """The request string a token for ``setec delete-version NAME VERSION`` is made from
    (the version in canonical decimal, so ``007`` and ``7`` need the same token)."""
    return f"delete-version:{name}:{version}"


def confirmation_token(request: str, now: float | None = None) -> str:
    """Return the token that confirms ``request`` at Unix time ``now`` (default: now).

    ``<window>.<digest>``: the window is ``(seconds + 119) // 60`` in lower-case hex,
    the digest the first 8 bytes of SHA-256 of the request, in hex. The window moves
    on at every Unix time that is 1 modulo 60, so a token stays valid for 1 to 60
    seconds: Go's arithmetic, kept so that the two CLIs agree.
    """
    seconds = int(time.time() if now is None else now)
    window = (seconds + 119) // 60
    digest = hashlib.sha256(request.encode("utf-8")).digest()[:8].hex()
    return f"{window:x}.{digest}"


def check_confirmation(request: str, token: str, now: float | None = None) -> str | None:
    """Return ``None`` if ``token`` confirms ``request`` now, otherwise the message that
    tells the user which token to use (Go's wording)."""
    want = confirmation_token(request, now)
    if not token:
        return f"confirmation required for {go_quote(request)}, use token {go_quote(want)}"
    if token != want:
        return f"incorrect confirmation for {go_quote(request)}, use token {go_quote(want)}"
    return None
