"""The answer to a guarded write whose guard failed (docs/api.md §9.4), both ways.

Status ``409``, ``Content-Type: application/json``, and one JSON object on one line
(then ``\\n``, as every error body ends): ``{"Error": reason, "Current": info}``, where
``Current`` is the secret's ``SecretInfo`` exactly as ``/api/info`` answers it, or
``null`` when the secret does not exist or the caller may not ``info`` it. Only a
guarded write, which a Go client never sends, can get it.
"""

from __future__ import annotations

import json

from setec_core.errors import ResponseError
from setec_core.model import SecretInfo
from setec_core.wire.decoding import JsonObject, parse
from setec_core.wire.reply import INFO, _info_of, go_escape

#: The status of a failed guard.
CONFLICT_STATUS = 409


def encode_conflict(reason: str, current: SecretInfo | None) -> bytes:
    """The server's side: the body of a 409 for a guard that failed.

    :param reason: one line naming the secret, never a value.
    :param current: what ``info`` shows the caller, or ``None``.
    """
    error = go_escape(json.dumps(" ".join(reason.split()), ensure_ascii=False))
    info = b"null" if current is None else INFO.encode(current)
    return b'{"Error":' + error.encode("utf-8") + b',"Current":' + info + b"}\n"


def decode_conflict(body: bytes) -> tuple[str, SecretInfo | None]:
    """A client's side: the reason and the current state of a 409's body.

    :raises ResponseError: if the body is not such an object (a proxy's page, say);
        the message never quotes the body.
    """
    doc = parse(body, _error, whole=True)
    if type(doc) is not JsonObject:
        raise _error("expected a guard failure")
    reason = ""
    current: SecretInfo | None = None
    for key, value in doc:  # the last of each key wins, as in Go
        folded = key.lower()
        if folded == "error":
            if type(value) is not str:
                raise _error('"Error" must be a string')
            reason = value
        elif folded == "current":
            # The SecretInfo of an info answer, read by the same rules.
            current = None if value is None else _info_of(value)
    return reason, current


def _error(reason: str) -> ResponseError:
    return ResponseError(f"unmarshaling response: {reason}")
