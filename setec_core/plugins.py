"""Loading plugins and choosing among them.

:func:`get_plugin_manager` builds a pluggy manager (never at import time) from the
``setec`` entry-point group, where the default plugins are installed too, plus any
plugin objects you pass. :class:`Plugins` is the one typed facade over it: the only
code that calls hooks. It collects what each plugin registers into a
:class:`Registry` per extension point. A registry refuses a name or URI scheme that two
plugins claim, naming both (a shadowed key provider in a secrets server is a security
bug), and answers an unknown name with the list of what is available. The facade also
collects the options the registered classes declare (:class:`~setec_core.options.Option`),
refusing a flag two plugins claim, and hands each class the values of its own.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from setec_core import hookspecs
from setec_core.authz import Authorizer
from setec_core.backup import BackupSink
from setec_core.errors import ConfigError, PluginError, SetecError
from setec_core.keys import KeyProvider
from setec_core.options import DeclaredOption, check_option_names, collect_options
from setec_core.server_info import DEFAULT_SERVER, ServerInfo
from setec_core.storage import StorageBackend
from setec_core.uris import redact

ENTRY_POINT_GROUP = "setec"

T = TypeVar("T")

_MORE = "install more as Python packages in the 'setec' entry-point group (see docs/plugins.md)"


def get_plugin_manager(
    plugins: Iterable[object] = (), *, load_entrypoints: bool = True
) -> pluggy.PluginManager:
    """Build a plugin manager with setec's hookspecs.

    :param plugins: extra plugin objects (modules or instances with ``@hookimpl``
        methods) to register, e.g. a plugin defined inside a test.
    :param load_entrypoints: load every plugin installed in the ``setec`` entry-point
        group, the default plugins among them. The built-in plugin
        (:mod:`setec_core.builtin`: ``dev://``, ``sqlite://``, ``memory://``) is
        registered first either way.
    :raises PluginError: if a plugin fails to import, two installed plugins share an
        entry-point name, or a plugin implements a hook that does not exist.
    """
    # Registered explicitly, not through an entry point, so that core works where no
    # entry point is installed; imported here so that ``import setec_core`` does not
    # load the backends.
    from setec_core.builtin import plugin as builtin

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name=builtin.NAME)
    if load_entrypoints:
        _load_entrypoints(pm)
    for plugin in plugins:
        if not isinstance(plugin, Hashable):
            # pluggy keeps plugins in sets when it calls a hook for some of them
            # (Plugins does, to attribute each registration to its plugin).
            raise PluginError(
                f"cannot register plugin {plugin!r}: it is not hashable; pass a module or "
                "an instance of an ordinary class (not a SimpleNamespace or a dataclass)"
            )
        try:
            pm.register(plugin)
        except ValueError as e:
            raise PluginError(f"cannot register plugin {plugin!r}: {e}") from e
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(
            f"plugin {e.plugin!r} implements a hook setec does not define: {e}; "
            "check the hook name against docs/plugins.md"
        ) from e
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    loaded: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in loaded:
            # The same distribution seen twice on sys.path (an editable install run
            # from its own checkout) lists the same entry point twice: harmless. Two
            # different targets under one name would silently shadow one: refuse.
            if loaded[ep.name] != ep.value:
                raise PluginError(
                    f"two installed plugins are both named {ep.name!r}: "
                    f"{loaded[ep.name]!r} and {ep.value!r}; uninstall one of them"
                )
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            dist = f" (from {ep.dist.name} {ep.dist.version})" if ep.dist else ""
            raise PluginError(
                f"plugin {ep.name!r}{dist} failed to load: {type(e).__name__}: {e}; "
                "reinstall it or uninstall it"
            ) from e
        loaded[ep.name] = ep.value
        try:
            pm.register(plugin, name=ep.name)
        except ValueError as e:
            # The name is taken (by the built-in plugin, say) or the module is already
            # registered under another name: pluggy's bare ValueError, said plainly.
            taken = pm.has_plugin(ep.name)
            why = f"the name {ep.name!r} is taken" if taken else "it is registered already"
            raise PluginError(
                f"cannot register the installed plugin {ep.name!r} ({ep.value}): {why}; "
                "rename its entry point or uninstall it"
            ) from e


@dataclass(frozen=True)
class Registration(Generic[T]):
    """One registered class and the plugin that registered it."""

    cls: type[T]
    plugin: str


class Registry(Generic[T]):
    """The classes registered for one extension point, by name and by URI scheme.

    :param kind: what is registered, for messages (``"key provider"``).
    :param base: the ABC every registered class must subclass.
    """

    def __init__(self, kind: str, base: Any) -> None:
        # ``base`` is an ABC; mypy does not let an abstract class stand for type[T].
        self.kind = kind
        self.base = base
        self._by_name: dict[str, Registration[T]] = {}
        self._by_scheme: dict[str, Registration[T]] = {}
        self._by_bare_prefix: dict[str, Registration[T]] = {}
        # prefix -> (the scheme it stands for, the class's name)
        self._expansions: dict[str, tuple[str, str]] = {}

    def add(self, cls: type[T], plugin: str) -> None:
        """Register ``cls`` on behalf of ``plugin``.

        :raises PluginError: if ``cls`` is not a subclass of the base class, has no
            ``name``, declares bare prefixes without a scheme, or its name, a scheme or
            a bare prefix is already taken (naming both plugins).
        """
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {plugin!r} registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of {self.base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} registered {cls.__name__} without a 'name' attribute"
            )
        schemes = tuple(getattr(cls, "schemes", ()))
        prefixes = tuple(getattr(cls, "bare_prefixes", ()))
        if prefixes and not schemes:
            raise PluginError(
                f"plugin {plugin!r} registered {cls.__name__} with bare prefixes but no "
                "scheme to read them under"
            )
        reg = Registration(cls, plugin)
        self._claim(self._by_name, name, reg, "name")
        for scheme in schemes:
            self._claim(self._by_scheme, scheme.lower(), reg, "URI scheme")
        for prefix in prefixes:
            # A prefix that overlaps another (arn:aws:kms: inside arn:) would take over
            # some of the other's values: as much a shadowed provider as a shared one.
            for taken in list(self._by_bare_prefix):
                if taken != prefix and (prefix.startswith(taken) or taken.startswith(prefix)):
                    prior = self._by_bare_prefix[taken]
                    raise PluginError(
                        f"{self.kind} bare prefix {prefix!r} of plugin {plugin!r} "
                        f"({cls.__qualname__}) overlaps {taken!r} of plugin "
                        f"{prior.plugin!r} ({prior.cls.__qualname__}): a value starting "
                        "with both would be ambiguous; uninstall one of them"
                    )
            self._claim(self._by_bare_prefix, prefix, reg, "bare prefix")
            self._expansions[prefix] = (schemes[0], name)

    def _claim(
        self, table: dict[str, Registration[T]], key: str, reg: Registration[T], what: str
    ) -> None:
        prior = table.get(key)
        if prior is not None:
            raise PluginError(
                f"{self.kind} {what} {key!r} is registered twice: by plugin "
                f"{prior.plugin!r} ({prior.cls.__qualname__}) and by plugin "
                f"{reg.plugin!r} ({reg.cls.__qualname__}); uninstall one of them"
            )
        table[key] = reg

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._by_name)

    def schemes(self) -> list[str]:
        """Return the registered URI schemes, sorted."""
        return sorted(self._by_scheme)

    def bare_prefixes(self) -> list[tuple[str, str]]:
        """Return ``(prefix, name)`` for every bare prefix (see :meth:`expand`), sorted."""
        return sorted((prefix, name) for prefix, (_, name) in self._expansions.items())

    def registrations(self) -> list[Registration[T]]:
        """Return every registration, sorted by name."""
        return [self._by_name[n] for n in self.names()]

    def expand(self, uri: str) -> str:
        """Return ``uri``, or, if it starts with a bare prefix a class declares (as the
        AWS KMS provider declares ``arn:``, after Go setec), ``SCHEME://uri`` with that
        class's first scheme."""
        for prefix, (scheme, _) in self._expansions.items():
            if uri.startswith(prefix):
                return f"{scheme}://{uri}"
        return uri

    def by_name(self, name: str) -> type[T]:
        """Return the class registered as ``name``.

        :raises PluginError: if there is none; the message lists the available names.
        """
        reg = self._by_name.get(name)
        if reg is None:
            raise PluginError(
                f"unknown {self.kind} {name!r}; available: {self._available()}; {_MORE}"
            )
        return reg.cls

    def by_uri(self, uri: str) -> type[T]:
        """Return the class whose scheme starts ``uri`` (``scheme://...``).

        :raises ConfigError: if ``uri`` has no scheme.
        :raises PluginError: if no class claims the scheme; the message lists the
            available schemes.
        """
        scheme, sep, _ = uri.partition("://")
        if not sep or not scheme:
            bare = "".join(
                f"; or a value starting {prefix} ({name})" for prefix, name in self.bare_prefixes()
            )
            raise ConfigError(
                f"{self.kind} {redact(uri)!r} is not a URI; expected SCHEME://..., "
                f"where SCHEME is one of: {self._schemes()}{bare}"
            )
        reg = self._by_scheme.get(scheme.lower())
        if reg is None:
            raise PluginError(
                f"unknown {self.kind} {scheme!r} in {redact(uri)!r}; available: "
                f"{self._schemes()}; {_MORE}"
            )
        return reg.cls

    def _available(self) -> str:
        return ", ".join(self.names()) or "(none installed)"

    def _schemes(self) -> str:
        return ", ".join(f"{s}://" for s in self.schemes()) or "(none installed)"


class Plugins:
    """The typed facade over a plugin manager: the only code that calls setec hooks.

    Build it with :meth:`load` (installed plugins plus any you pass) or from a manager
    made by :func:`get_plugin_manager`. It builds plugins with the values of their
    declared options given to :meth:`with_options` (each class gets its own only), or
    their defaults.

    :raises PluginError: from the constructor, if two plugins claim the same name,
        scheme or option flag, or a plugin registers something that is not a subclass
        of the interface or declares an option that is not an :class:`Option`.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.key_providers: Registry[KeyProvider] = Registry("key provider", KeyProvider)
        self.storage_backends: Registry[StorageBackend] = Registry(
            "storage backend", StorageBackend
        )
        self.authorizers: Registry[Authorizer] = Registry("authorizer", Authorizer)
        self.backup_sinks: Registry[BackupSink] = Registry("backup sink", BackupSink)
        self._collect("setec_register_key_providers", self.key_providers)
        self._collect("setec_register_storage_backends", self.storage_backends)
        self._collect("setec_register_authorizers", self.authorizers)
        self._collect("setec_register_backup_sinks", self.backup_sinks)
        self._options = collect_options(
            (registry.kind, reg.plugin, reg.cls)
            for registry in self._registries()
            for reg in registry.registrations()
        )
        self._values: dict[str, Any] = {}

    @classmethod
    def load(cls, plugins: Iterable[object] = (), *, load_entrypoints: bool = True) -> Plugins:
        """Build the facade over :func:`get_plugin_manager` with the same arguments."""
        return cls(get_plugin_manager(plugins, load_entrypoints=load_entrypoints))

    def _registries(self) -> tuple[Registry[Any], ...]:
        return (self.key_providers, self.storage_backends, self.authorizers, self.backup_sinks)

    def _collect(self, hook_name: str, registry: Registry[Any]) -> None:
        # Called through pluggy, so that its hook wrappers, tracing and hook-call
        # monitoring run, but once per plugin: pluggy passes every implementation the
        # same arguments, so only a register callback of its own tells which plugin
        # registered a class, and a name claimed twice must name both plugins.
        # pm.subset_hook_caller (what pytest uses to call a hook for some conftest files
        # only) leaves the other implementations out of each call but keeps every hook
        # wrapper, so a wrapper wraps each plugin's registrations. Plugins are called
        # in pluggy's own order (last registered first).
        hook = getattr(self.pm.hook, hook_name)
        callers = {
            impl.plugin: impl.plugin_name
            for impl in reversed(hook.get_hookimpls())
            if not (impl.wrapper or impl.hookwrapper)
        }
        for plugin, name in callers.items():

            def register(cls: type[Any], _plugin: str = name) -> None:
                registry.add(cls, _plugin)

            others = [p for p in callers if p is not plugin]
            self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)

    # --- options -------------------------------------------------------------------

    def declared_options(self, kind: str | None = None) -> list[DeclaredOption]:
        """Return the options the registered classes declare, sorted by flag; only
        those of ``kind`` (``"backup sink"``) if it is given."""
        unique = {id(d): d for d in self._options.values()}.values()
        return sorted(
            (d for d in unique if kind is None or any(k == kind for k, _ in d.owners)),
            key=lambda d: d.option.flag,
        )

    def check_flags(
        self, taken: Iterable[str], program: str, kinds: Iterable[str] | None = None
    ) -> None:
        """Refuse options that use a flag or value name ``program`` has itself.

        :param taken: the program's own flags (``--listen``) and value names
            (``listen``).
        :param program: the program or command, for the message (``setec-serve``).
        :param kinds: check only the options of these kinds (``"backup sink"``), the
            ones ``program`` takes; all by default.
        :raises PluginError: naming the plugin, its class and the flag.
        """
        own = set(taken)
        wanted = None if kinds is None else set(kinds)
        for declared in self.declared_options():
            if wanted is not None and not any(kind in wanted for kind, _ in declared.owners):
                continue
            option = declared.option
            for flag in option.flags:
                if flag in own or (flag == option.flag and option.dest in own):
                    _, cls = declared.owners[0]
                    raise PluginError(
                        f"option {flag} is claimed twice: by {program} itself and by plugin "
                        f"{declared.plugin!r} ({cls.__qualname__}); uninstall the plugin"
                    )

    def with_options(self, values: Mapping[str, Any]) -> Plugins:
        """Return a facade over the same plugins that builds them with ``values``.

        :param values: option values by :attr:`Option.dest`, such as ``setec-serve``'s
            parsed flags. Each class is given the values of the options it declares
            and nothing else; a missing or ``None`` value means the option's default.
        """
        configured = copy.copy(self)
        configured._values = dict(values)
        return configured

    def option_values(self, cls: type[Any]) -> dict[str, Any]:
        """Return the values of the options ``cls`` declares, by :attr:`Option.dest`
        (every one, defaults filled in)."""
        out: dict[str, Any] = {}
        for option in getattr(cls, "options", ()):
            value = self._values.get(option.dest)
            out[option.dest] = option.default if value is None else value
        return out

    def _option_kwargs(self, cls: type[Any]) -> dict[str, Any]:
        # Only a class that declares options takes them: from_uri(uri) stays the
        # whole contract of the others.
        return {"options": self.option_values(cls)} if getattr(cls, "options", ()) else {}

    # --- selection ---------------------------------------------------------------

    def key_provider(self, uri: str) -> KeyProvider:
        """Build the key provider for ``uri``. A value starting with a provider's bare
        prefix means that provider (a bare AWS KMS ARN ``arn:aws:kms:...`` means
        ``aws-kms://ARN``, as in Go setec).

        :raises ConfigError: if the URI is malformed or names no installed provider.
        """
        uri = self.key_providers.expand(uri)
        return _build(
            self.key_providers, uri, lambda cls: cls.from_uri(uri, **self._option_kwargs(cls))
        )

    def storage(self, uri: str) -> StorageBackend:
        """Open the storage backend for ``uri`` (``sqlite:///path``, ``memory://``).

        :raises ConfigError: if the URI is malformed or names no installed backend.
        :raises CorruptStoreError: if the location holds an unreadable store.
        """
        return _build(
            self.storage_backends,
            uri,
            lambda cls: cls.from_uri(uri, **self._option_kwargs(cls)),
        )

    def backup_sink(self, uri: str, *, read_only: bool = False) -> BackupSink:
        """Build the backup sink for ``uri`` (``s3://bucket/prefix``, ``dir:///path``);
        ``read_only`` for callers that only list and read backups.

        :raises ConfigError: if the URI is malformed or names no installed sink.
        """
        return _build(
            self.backup_sinks,
            uri,
            lambda cls: _make_sink(cls, uri, read_only, self._option_kwargs(cls)),
        )

    def authorizer(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        server: ServerInfo = DEFAULT_SERVER,
    ) -> Authorizer:
        """Build the authorizer called ``name``.

        :param options: option values by :attr:`Option.dest`, instead of those given to
            :meth:`with_options`; the authorizer gets those it declares.
        :param server: where the server listens, whether it speaks TLS, whether it runs
            in dev mode.
        :raises ConfigError: if no authorizer has that name, ``options`` holds a name
            the authorizer does not declare (such as ``listen``, which is part of
            ``server``), or the options are invalid.
        """
        cls = self.authorizers.by_name(name)
        if options is not None:
            check_option_names(cls, options, f"authorizer {name!r}")
        source = self if options is None else self.with_options(options)
        values = source.option_values(cls)
        return _construct(self.authorizers, name, lambda: cls.from_options(values, server))

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add subcommands to the click group ``cli``."""
        self.pm.hook.setec_register_commands(cli=cli)

    def describe(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """Return ``(kind, name, plugin, schemes)`` for everything registered."""
        out = []
        for registry in self._registries():
            for reg in registry.registrations():
                schemes = tuple(getattr(reg.cls, "schemes", ()))
                out.append((registry.kind, str(getattr(reg.cls, "name")), reg.plugin, schemes))  # noqa: B009 - name is checked at registration
        return out


def _make_sink(
    cls: type[BackupSink], uri: str, read_only: bool, kwargs: dict[str, Any]
) -> BackupSink:
    # read_only came after the first sinks were written: a sink whose from_uri does
    # not take it is built the old way (it may create its location; nothing worse).
    if read_only and "read_only" in inspect.signature(cls.from_uri).parameters:
        return cls.from_uri(uri, read_only=True, **kwargs)
    return cls.from_uri(uri, **kwargs)


def _build(registry: Registry[T], uri: str, make: Callable[[type[T]], T]) -> T:
    cls = registry.by_uri(uri)
    return _construct(registry, redact(uri), lambda: make(cls))


def _construct(registry: Registry[T], what: str, make: Callable[[], T]) -> T:
    try:
        return make()
    except SetecError:
        raise
    except Exception as e:
        # A plugin bug must still reach the operator as one clear line, naming the
        # plugin and what it was asked to open.
        raise PluginError(f"{registry.kind} for {what!r} failed: {type(e).__name__}: {e}") from e
