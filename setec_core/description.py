"""What a secret's description may be (``set-info``, docs/api.md §9.5).

A description says what a secret is for, in one line: ``setec list``, ``setec info``
and the dashboard show it beside the name. It is not a secret value, but it is kept
encrypted in the secret's record and never written to logs or the audit log (only its
length is), since people write things there they would not put in a name.

The rules: at most :data:`MAX_DESCRIPTION_BYTES` bytes of UTF-8, and no control
characters (C0, DEL, C1) nor the Unicode line and paragraph separators, so that a
description stays one line in a table and cannot move a terminal's cursor or colour
its output. Empty means none.
"""

from __future__ import annotations

import re

from setec_core.errors import InvalidRequestError

#: The longest description, in UTF-8 bytes.
MAX_DESCRIPTION_BYTES = 1000

# C0 controls (tab and newline included), DEL, C1 controls, U+2028 and U+2029.
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_description(description: object) -> str:
    """Return ``description`` if it may be a secret's description.

    :raises InvalidRequestError: saying which rule it breaks (never quoting it): not a
        string, not valid Unicode, over :data:`MAX_DESCRIPTION_BYTES` bytes, or holding
        a control character or a line break.
    """
    if not isinstance(description, str):
        raise InvalidRequestError(
            f"a description must be a string, not {type(description).__name__}"
        )
    try:
        size = len(description.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequestError(
            "the description is not valid Unicode (it holds a lone surrogate)"
        ) from None
    if size > MAX_DESCRIPTION_BYTES:
        raise InvalidRequestError(
            f"the description is {size} bytes long; descriptions are at most "
            f"{MAX_DESCRIPTION_BYTES} bytes (UTF-8)"
        )
    found = _NOT_ONE_LINE.search(description)
    if found is not None:
        raise InvalidRequestError(
            f"the description holds U+{ord(found.group()):04X}, a control character or "
            f"line break, at character {found.start() + 1}; a description is one line of "
            "text without control characters"
        )
    return description
