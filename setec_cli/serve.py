"""The ``setec-serve`` server command (issue: the server). Not yet implemented."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of ``setec-serve``."""
    print("setec-serve: the server is not yet implemented", file=sys.stderr)
    sys.exit(2)
