"""The ``builtin`` plugin: registers the key provider and storage backends of
:mod:`setec_core.builtin`. :func:`~setec_core.plugins.get_plugin_manager` registers it
under :data:`NAME` before any other plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.hookspecs import hookimpl

NAME = "builtin"
"""The plugin name these register under (``setec-serve plugins`` shows it)."""


@hookimpl
def setec_register_key_providers(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`DevKeyProvider` (``dev://``)."""
    register(DevKeyProvider)


@hookimpl
def setec_register_storage_backends(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`SqliteStorage` (``sqlite://``) and :class:`MemoryStorage`
    (``memory://``)."""
    register(SqliteStorage)
    register(MemoryStorage)
