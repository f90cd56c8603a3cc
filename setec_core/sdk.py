"""Importing an optional SDK when a plugin first needs it (docs/plugins.md, "Helpers
for key-provider plugins").

A plugin that imports its SDK at module level makes every setec program load it, and
fail without it, although most never build that plugin; importing it in the
constructor, through :func:`import_sdk`, costs nothing until then and says what to
install when it is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from setec_core.errors import ConfigError


def import_sdk(
    modules: Sequence[str], *, user: str, packages: Sequence[str], install: str
) -> tuple[ModuleType, ...]:
    """Import ``modules`` and return them in order, or say how to install them.

    :param modules: dotted module names, e.g. ``["boto3", "botocore.exceptions"]``.
    :param user: what needs them, for the message, e.g. ``"the aws-kms key provider"``.
    :param packages: the distributions that provide them, e.g. ``["boto3"]``.
    :param install: the requirement that installs them, e.g. ``"pysetec[aws]"``.
    :raises ConfigError: if one cannot be imported: "the aws-kms key provider needs
        boto3, which is not installed (...); install it with: pip install 'pysetec[aws]'".
    """
    try:
        return tuple(importlib.import_module(name) for name in modules)
    except ImportError as e:
        one = len(packages) == 1
        names = packages[0] if one else f"{', '.join(packages[:-1])} and {packages[-1]}"
        raise ConfigError(
            f"{user} needs {names}, which {'is' if one else 'are'} not installed ({e}); "
            f"install {'it' if one else 'them'} with: pip install {install!r}"
        ) from None
