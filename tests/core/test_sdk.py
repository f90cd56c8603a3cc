"""setec_core.sdk.import_sdk: an optional SDK is imported when a plugin needs it, and
its absence says what to install (docs/plugins.md, "Helpers for key-provider plugins")."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from email.mime import text

import pytest

from setec_core import ConfigError
from setec_core.sdk import import_sdk


def test_modules_are_returned_in_order() -> None:
    """The modules come back in the order asked for, submodules as themselves."""
    assert import_sdk(
        ["json", "email.mime.text"], user="the fake key provider", packages=["x"], install="x"
    ) == (json, text)


@pytest.mark.parametrize(
    ("packages", "needs"),
    [
        (["fake-sdk"], "needs fake-sdk, which is not installed"),
        (["fake-sdk", "fake-crc"], "needs fake-sdk and fake-crc, which are not installed"),
        (["a", "b", "c"], "needs a, b and c, which are not installed"),
    ],
)
def test_missing_sdk_says_what_to_install(packages: Sequence[str], needs: str) -> None:
    """A module that cannot be imported is a ConfigError naming what needs it, the
    packages, the import error and the pip command; the ImportError is not chained."""
    with pytest.raises(ConfigError) as info:
        import_sdk(
            ["json", "setec_no_such_sdk"],
            user="the fake key provider",
            packages=packages,
            install="pysetec[fake]",
        )
    it = "it" if len(packages) == 1 else "them"
    assert str(info.value) == (
        f"the fake key provider {needs} (No module named 'setec_no_such_sdk'); "
        f"install {it} with: pip install 'pysetec[fake]'"
    )
    assert info.value.__suppress_context__


def test_a_blocked_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module hidden from the import system (as the plugin tests hide boto3) counts as
    missing too."""
    monkeypatch.setitem(sys.modules, "json", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[fake\]'"):
        import_sdk(["json"], user="the fake key provider", packages=["j"], install="pysetec[fake]")
