"""The plugin hooks of setec (pluggy project name ``setec``).

Each ``setec_register_*`` hook but ``setec_register_commands`` (called when a console
script builds its command group) is called once per plugin when a
:class:`~setec_core.plugins.Plugins` facade is built, through pluggy (hook wrappers and
hook-call monitoring apply), with a ``register`` callback of that plugin's own, which it
calls with each class it provides.
All results count; hooks return nothing. A registered class may declare the
``setec-serve`` options it takes in its ``options`` attribute
(:class:`~setec_core.options.Option`; docs/plugins.md, "Plugin options"). Plugins
implement the hooks with :data:`hookimpl`::

    from setec_core import hookimpl

    @hookimpl
    def setec_register_key_providers(register):
        register(MyKmsKeyProvider)

and are installed through the ``setec`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "setec"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def setec_register_key_providers(register: Callable[[type[Any]], None]) -> None:
    """Register key providers (subclasses of :class:`~setec_core.keys.KeyProvider`).

    Called once per plugin when the plugin facade is built. Every plugin's
    registrations count; a scheme or name registered twice is an error naming both
    plugins.

    :param register: call it with each provider class; the class's ``name``,
        ``schemes`` and ``bare_prefixes`` decide how ``--kms-key-name`` values select
        it, and its ``options`` become flags.
    :returns: nothing.
    """


@hookspec
def setec_register_storage_backends(register: Callable[[type[Any]], None]) -> None:
    """Register storage backends (subclasses of
    :class:`~setec_core.storage.StorageBackend`).

    Called once per plugin when the plugin facade is built. Every plugin's
    registrations count; a scheme or name registered twice is an error naming both
    plugins.

    :param register: call it with each backend class; its ``schemes`` decide which
        ``--storage`` URIs select it, and its ``options`` become flags.
    :returns: nothing.
    """


@hookspec
def setec_register_authorizers(register: Callable[[type[Any]], None]) -> None:
    """Register authorizers (subclasses of :class:`~setec_core.authz.Authorizer`).

    Called once per plugin when the plugin facade is built. Every plugin's
    registrations count; a name registered twice is an error naming both plugins.

    :param register: call it with each authorizer class; its ``name`` is what
        ``--authorizer`` selects, and its ``options`` become flags.
    :returns: nothing.
    """


@hookspec
def setec_register_backup_sinks(register: Callable[[type[Any]], None]) -> None:
    """Register backup sinks (subclasses of :class:`~setec_core.backup.BackupSink`).

    Called once per plugin when the plugin facade is built. Every plugin's
    registrations count; a scheme or name registered twice is an error naming both
    plugins.

    :param register: call it with each sink class; its ``schemes`` decide which
        ``--backup`` URIs select it, and its ``options`` become flags.
    :returns: nothing.
    """


@hookspec
def setec_register_commands(cli: Any) -> None:
    """Add subcommands to a setec command-line program.

    Called once per plugin when a console script (``setec`` or ``setec-serve``) builds
    its command group. Every plugin's additions count.

    :param cli: the program's ``click.Group``; add commands with ``cli.add_command``.
    :returns: nothing.
    """
