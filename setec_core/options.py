"""The options plugins declare: :class:`Option`, and how they are collected.

A plugin class (key provider, storage backend, authorizer or backup sink) lists the
options it takes in its ``options`` class attribute, as :class:`Option` objects::

    class VaultKeyProvider(KeyProvider):
        options = (Option("--vault-namespace", "The Vault namespace of the key."),)

``setec-serve`` makes each one a flag with an environment variable (``--vault-namespace``,
``SETEC_VAULT_NAMESPACE``) and a line of ``--help`` saying which plugin it belongs to, and
the :class:`~setec_core.plugins.Plugins` facade hands each class the values of its own
options only (docs/plugins.md, "Plugin options"); :func:`collect_options` is how it
finds them, refusing a flag two plugins claim. (What an authorizer is told about the
server itself is :class:`~setec_core.server_info.ServerInfo`.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from setec_core.errors import ConfigError, PluginError

#: The types an option's value may have; ``bool`` is a flag that takes no value.
OPTION_TYPES: tuple[type, ...] = (str, int, float, bool, Path)


_FLAG = re.compile(r"--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_METAVARS = {str: "TEXT", int: "N", float: "NUMBER", bool: "", Path: "PATH"}


@dataclass(frozen=True)
class Option:
    """One option of a plugin class: a ``setec-serve`` flag and its ``SETEC_*`` variable.

    :param flag: the flag, in kebab-case after two dashes (``"--policy-file"``). The
        value reaches the plugin under :attr:`dest` (``policy_file``); the environment
        variable is :attr:`envvar` (``SETEC_POLICY_FILE``).
    :param help: a sentence or two for ``--help``; ``setec-serve`` adds the plugin and
        the ``--authorizer`` name or URI scheme the option applies to.
    :param type: the type of the value: ``str``, ``int``, ``float``, ``bool`` (a flag
        that takes no value: ``True`` when given) or :class:`pathlib.Path`.
    :param default: the value when the option is not given; ``()`` with ``multiple``.
    :param metavar: the name of the value in ``--help`` (``PATH``); by default one
        that fits ``type``.
    :param multiple: the option may be given more than once; the value is a tuple.
    :param aliases: other flags with the same meaning (Go setec's spellings), each with
        its own ``SETEC_*`` variable.
    :raises PluginError: if a flag is not kebab-case after ``--``, ``type`` is not one
        of the types above, or a ``bool`` option is ``multiple``.
    """

    flag: str
    help: str
    type: type = str
    default: Any = None
    metavar: str | None = None
    multiple: bool = False
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for flag in self.flags:
            if not isinstance(flag, str) or not _FLAG.fullmatch(flag):
                raise PluginError(
                    f"option flag {flag!r} is not of the form --lower-case-words "
                    "(e.g. --policy-file)"
                )
        if self.type not in OPTION_TYPES:
            names = ", ".join(t.__name__ for t in OPTION_TYPES)
            raise PluginError(f"option {self.flag} has type {self.type!r}; use one of {names}")
        if self.type is bool and self.multiple:
            raise PluginError(f"option {self.flag} is a bool flag and cannot be multiple")
        if self.multiple and self.default is None:
            object.__setattr__(self, "default", ())

    @property
    def flags(self) -> tuple[str, ...]:
        """The flag and its aliases."""
        return (self.flag, *self.aliases)

    @property
    def dest(self) -> str:
        """The name the value is passed under: the flag without dashes, in snake_case."""
        return _dest(self.flag)

    @property
    def envvar(self) -> str:
        """The environment variable of :attr:`flag`: ``SETEC_`` and :attr:`dest` in
        upper case."""
        return "SETEC_" + self.dest.upper()

    @property
    def envvars(self) -> tuple[str, ...]:
        """The environment variables of the flag and of each alias, in that order."""
        return tuple("SETEC_" + _dest(flag).upper() for flag in self.flags)

    @property
    def value_name(self) -> str:
        """The name of the value in ``--help``: :attr:`metavar`, or one that fits
        :attr:`type` (empty for a ``bool`` flag)."""
        return self.metavar if self.metavar is not None else _METAVARS[self.type]


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


@dataclass(frozen=True)
class DeclaredOption:
    """An option that registered classes declare (their ``options`` attribute), with the
    plugin that declared it.

    :param option: the declaration.
    :param plugin: the name of the plugin that registered the classes.
    :param owners: ``(kind, class)`` for each class that takes the option, such as
        ``("authorizer", PolicyAuthorizer)``; more than one only where classes of one
        plugin declare the same option.
    """

    option: Option
    plugin: str
    owners: tuple[tuple[str, type[Any]], ...]

    def applies_to(self, cls: type[Any]) -> bool:
        """Whether ``cls`` is one of the classes that take this option."""
        return any(owner is cls for _, owner in self.owners)


def collect_options(classes: Iterable[tuple[str, str, type[Any]]]) -> dict[str, DeclaredOption]:
    """Index the options registered classes declare by each of their flags and aliases.

    :param classes: ``(kind, plugin, class)`` for every registered class, such as
        ``("authorizer", "policy-authz", PolicyAuthorizer)``.
    :raises PluginError: if a class declares something that is not an :class:`Option`,
        or a flag is claimed twice (naming both plugins and classes); classes of one
        plugin may share the very same option, and then share its flag.
    """
    table: dict[str, DeclaredOption] = {}
    for kind, plugin, cls in classes:
        for option in getattr(cls, "options", ()):
            if not isinstance(option, Option):
                raise PluginError(
                    f"plugin {plugin!r} declares {option!r} in {cls.__qualname__}.options, "
                    "which is not a setec_core.options.Option"
                )
            declared = DeclaredOption(option, plugin, ((kind, cls),))
            for flag in option.flags:
                prior = table.get(flag)
                if prior is None:
                    continue
                if prior.plugin == plugin and prior.option == option:
                    # One AWS profile for a plugin's key provider and its sink, say: one
                    # flag, and both classes get its value.
                    declared = replace(prior, owners=(*prior.owners, *declared.owners))
                    break
                _, prior_cls = prior.owners[0]
                raise PluginError(
                    f"option {flag} is claimed twice: by plugin {prior.plugin!r} "
                    f"({prior_cls.__qualname__}) and by plugin {plugin!r} "
                    f"({cls.__qualname__}); uninstall one of them"
                )
            for flag in option.flags:
                table[flag] = declared
    return table


#: Names that were options of every authorizer before they became :class:`ServerInfo`
#: fields; given as options now, they would be silently ignored.
_SERVER_FACTS = frozenset({"listen", "tls", "dev"})


def check_option_names(cls: type[Any], options: Mapping[str, Any], what: str) -> None:
    """Refuse option values ``cls`` does not declare, rather than ignore them: an
    ignored setting (a listen address an authorizer checks, say) fails open.

    :param what: the plugin, for the message (``"authorizer 'policy'"``).
    :raises ConfigError: naming the unknown names and the ones ``cls`` takes.
    """
    declared = {option.dest for option in getattr(cls, "options", ())}
    unknown = sorted(set(options) - declared)
    if not unknown:
        return
    takes = ", ".join(sorted(declared)) or "none"
    hint = ""
    if _SERVER_FACTS & set(unknown):
        hint = " (the listen address, TLS and dev mode are given as server=ServerInfo(...))"
    raise ConfigError(
        f"{what} takes no option {', '.join(map(repr, unknown))}{hint}; it takes: {takes}"
    )
