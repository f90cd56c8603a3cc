"""setec's client side: fetch secrets from a setec server at runtime (docs/client.md).

- :class:`Client`: every API call, typed errors.
- :class:`Store`: the secrets a program needs, fetched at start, kept fresh by a
  background poller with conditional gets, served from memory (and an optional
  :class:`FileCache`) when the server is away.
- :class:`Updater`, :class:`VersionedSecret`, :class:`Keyring`: values derived from a
  secret, explicit versions, and all versions of a secret.
- :class:`FileClient`: secrets from a JSON file instead of a server.
- :func:`secret_field` / :func:`parse_fields`: dataclass fields filled by a Store.
- :func:`static_secret`, :func:`static_file`, :func:`static_text_file`: fixed handles.

Names are imported on first use, so ``import setec_core.client`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Client": "api",
    "StoreClient": "api",
    "VersioningStoreClient": "api",
    "Cache": "cache",
    "MemCache": "cache",
    "FileCache": "cache",
    "FileClient": "fileclient",
    "Keyring": "keyring",
    "Store": "store",
    "Secret": "secret",
    "VersionedSecret": "store",
    "Watcher": "watcher",
    "Ticker": "ticker",
    "Updater": "updater",
    "StaticUpdater": "updater",
    "secret_field": "fields",
    "parse_fields": "fields",
    "Fields": "fields",
    "NoFieldsError": "fields",
    "static_secret": "static",
    "static_file": "static",
    "static_text_file": "static",
}

__all__ = [
    "Cache",
    "Client",
    "Fields",
    "FileCache",
    "FileClient",
    "Keyring",
    "MemCache",
    "NoFieldsError",
    "Secret",
    "StaticUpdater",
    "Store",
    "StoreClient",
    "Ticker",
    "Updater",
    "VersionedSecret",
    "VersioningStoreClient",
    "Watcher",
    "parse_fields",
    "secret_field",
    "static_file",
    "static_secret",
    "static_text_file",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'setec_core.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"setec_core.client.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from setec_core.client.api import Client, StoreClient, VersioningStoreClient
    from setec_core.client.cache import Cache, FileCache, MemCache
    from setec_core.client.fields import Fields, NoFieldsError, parse_fields, secret_field
    from setec_core.client.fileclient import FileClient
    from setec_core.client.keyring import Keyring
    from setec_core.client.secret import Secret
    from setec_core.client.static import static_file, static_secret, static_text_file
    from setec_core.client.store import Store, VersionedSecret
    from setec_core.client.ticker import Ticker
    from setec_core.client.updater import StaticUpdater, Updater
    from setec_core.client.watcher import Watcher
