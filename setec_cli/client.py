"""The ``setec`` client command (issue: client side). Not yet implemented."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of ``setec``."""
    print("setec: the client commands are not yet implemented", file=sys.stderr)
    sys.exit(2)
