"""Reading a request body from WSGI, within a limit, without leaking it.

The app reads the body itself rather than through werkzeug's ``get_data``: werkzeug
silently truncates a chunked body at the limit, and a read error's message (cheroot's
bad-chunk errors quote the bytes) could carry a secret value into a log. Nothing read
here reaches an error message or a log line.
"""

from __future__ import annotations

from typing import Any

from setec_core.http.route import Refused
from setec_core.http.status import too_large


def read_body(environ: dict[str, Any], limit: int, *, carries_value: bool = False) -> bytes:
    """Read a request body of at most ``limit`` bytes from the WSGI ``environ``.

    :param carries_value: the body is a put or create-version request (the 413's reason
        then says how large a value fits, :func:`~setec_core.http.status.too_large`).
    :raises Refused: 413 above ``limit``, 400 for a body that cannot be read (framing
        that disagrees, a bad ``Content-Length``, a body cut short).
    """
    raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    if raw_length:
        if environ.get("HTTP_TRANSFER_ENCODING"):
            # RFC 9112, section 6.1: the two framings disagree; guessing invites smuggling.
            raise Refused(400, "request has both Transfer-Encoding and Content-Length")
        # isdigit alone takes "²" and "٣", which int() refuses or reads as 3.
        if not (raw_length.isascii() and raw_length.isdigit()):
            raise Refused(400, "invalid Content-Length")
        length = int(raw_length)
        if length > limit:
            raise Refused(413, too_large(limit, carries_value=carries_value))
        wanted, chunked = length, False
    elif environ.get("wsgi.input_terminated"):
        # Chunked: the server ends the stream; read one byte past the limit to know.
        wanted, chunked = limit + 1, True
    else:
        return b""
    parts: list[bytes] = []
    got = 0
    try:
        while got < wanted:
            part = stream.read(min(wanted - got, 1 << 16))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except Exception as e:  # the client's framing or connection failed
        # cheroot enforces its own copy of the limit on chunked bodies and says so
        # only in the message (MaxSizeExceeded, or a bare OSError).
        if "Too Large" in str(e):
            raise Refused(413, too_large(limit, carries_value=carries_value)) from None
        raise Refused(400, "could not read the request body") from None
    if chunked and got > limit:
        raise Refused(413, too_large(limit, carries_value=carries_value))
    if not chunked and got < wanted:
        raise Refused(400, "request body shorter than its Content-Length")
    return b"".join(parts)
