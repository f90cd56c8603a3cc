"""The options plugins declare (:class:`~setec_core.options.Option`), as click flags.

``setec-serve`` is a :class:`PluginFlagsGroup` and its admin commands are
:class:`PluginFlagsCommand`: besides their own options they take those of the plugins
their own flags select (``--kms-key-name``, ``--storage``, ``--authorizer``,
``--backup``). The plugins are those of the command line: the click context's ``obj``
(what ``main()`` loaded, or a test passed), or the installed plugins if there is none.
They are read when a command line is parsed or help is shown, never at import.

:class:`ListingOption` is an option whose help names what the plugins provide
(``{key_providers}`` becomes ``aws-kms://..., dev://..., ...``), so that no list of
schemes is written into the program.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from setec_cli.say import fail
from setec_core.errors import SetecError

if TYPE_CHECKING:
    from setec_core.options import DeclaredOption
    from setec_core.plugins import Plugins, Registry

#: The flag that selects each kind of plugin.
SELECTORS = {
    "key provider": "--kms-key-name",
    "storage backend": "--storage",
    "authorizer": "--authorizer",
    "backup sink": "--backup",
}

_CLICK_TYPES: dict[type, Any] = {
    str: click.STRING,
    int: click.INT,
    float: click.FLOAT,
    Path: click.Path(path_type=Path),
}


def plugins_of(ctx: click.Context) -> Plugins:
    """Return the plugins of this command line: the root context's ``obj``, or the
    installed plugins (then kept there). Exits with a one-line error if a plugin is
    broken."""
    root = ctx.find_root()
    if root.obj is None:
        from setec_core.plugins import Plugins

        try:
            root.obj = Plugins.load()
        except SetecError as e:
            fail(str(e))
    plugins: Plugins = root.obj
    return plugins


def uri_forms(registry: Registry[Any]) -> str:
    """The URIs ``registry``'s classes take, for help and messages:
    ``aws-kms://..., dev://...; or a bare arn:... for aws-kms``."""
    forms = ", ".join(f"{scheme}://..." for scheme in registry.schemes()) or "none installed"
    bare = "".join(
        f"; or a bare {prefix}... for {name}" for prefix, name in registry.bare_prefixes()
    )
    return forms + bare


def listing(plugins: Plugins) -> dict[str, str]:
    """The placeholders of :class:`ListingOption` help, filled in from ``plugins``."""
    return {
        "{key_providers}": uri_forms(plugins.key_providers),
        "{storage_backends}": uri_forms(plugins.storage_backends),
        "{backup_sinks}": uri_forms(plugins.backup_sinks),
        "{authorizers}": ", ".join(plugins.authorizers.names()) or "none installed",
    }


class ListingOption(click.Option):
    """An option whose help may hold ``{key_providers}``, ``{storage_backends}``,
    ``{backup_sinks}`` and ``{authorizers}``, replaced by what the plugins provide."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        text = record[1]
        for placeholder, value in listing(plugins_of(ctx)).items():
            text = text.replace(placeholder, value)
        return record[0], text


def applies_to(kind: str, cls: type[Any]) -> str:
    """Say which plugin choice an option of ``cls`` (a ``kind``) applies to:
    ``--authorizer policy`` or ``--backup s3://``."""
    if kind == "authorizer":
        return f"--authorizer {cls.name}"
    return f"{SELECTORS[kind]} " + " or ".join(f"{s}://" for s in cls.schemes)


def click_option(declared: DeclaredOption, *, read_env: bool) -> click.Option:
    """Make ``declared`` a click option.

    :param read_env: whether the option reads its ``SETEC_*`` variables (as
        ``setec-serve``'s own options do). Without them, a value not given is ``None``,
        so that it does not hide one given before the subcommand.
    """
    option = declared.option
    where = ", ".join(applies_to(kind, cls) for kind, cls in declared.owners)
    kwargs: dict[str, Any] = {
        "help": f"{option.help} For {where} (plugin {declared.plugin}).",
        "multiple": option.multiple,
        "default": option.default if read_env else None,
        "show_default": read_env and option.default not in (None, False, ()),
    }
    if read_env:
        kwargs["envvar"] = list(option.envvars)
        kwargs["show_envvar"] = True
    if option.type is bool:
        kwargs["is_flag"] = True
        kwargs["flag_value"] = True
    else:
        kwargs["type"] = _CLICK_TYPES[option.type]
        kwargs["metavar"] = option.value_name
    return click.Option([*option.flags, option.dest], **kwargs)


class PluginFlagsCommand(click.Command):
    """A command that also takes the options of the plugins its own flags select.

    A plugin option that uses one of the command's own flags or value names is refused
    (exit 1, naming the plugin). The options are made once per set of plugins.
    """

    #: Whether the plugin options read their ``SETEC_*`` variables.
    read_env = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_params: weakref.WeakKeyDictionary[Plugins, list[click.Parameter]] = (
            weakref.WeakKeyDictionary()
        )

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        extra = self.plugin_params(ctx)
        help_option = self.get_help_option(ctx)
        if help_option is not None and params and params[-1] is help_option:
            return [*params[:-1], *extra, help_option]
        return [*params, *extra]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The plugins' options get a section of their own, after the command's.
        extra = self.plugin_params(ctx)
        own = [p for p in self.get_params(ctx) if not any(p is e for e in extra)]
        for title, params in (("Options", own), ("Options of the installed plugins", extra)):
            records = [r for p in params if (r := p.get_help_record(ctx)) is not None]
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)

    def plugin_params(self, ctx: click.Context) -> list[click.Parameter]:
        """Return the plugin options this command takes, made from ``ctx``'s plugins.

        Made once per :class:`~setec_core.plugins.Plugins`: click tells options apart
        by identity while it parses.
        """
        plugins = plugins_of(ctx)
        made = self._plugin_params.get(plugins)
        if made is None:
            made = self._make_plugin_params(ctx, plugins)
            self._plugin_params[plugins] = made
        return made

    def _make_plugin_params(self, ctx: click.Context, plugins: Plugins) -> list[click.Parameter]:
        own = list(self.params)
        help_option = self.get_help_option(ctx)
        if help_option is not None:
            own.append(help_option)
        kinds = [kind for kind, flag in SELECTORS.items() if any(flag in p.opts for p in own)]
        taken = {opt for p in own for opt in p.opts} | {p.name for p in own if p.name}
        try:
            plugins.check_flags(taken, program=ctx.command_path, kinds=kinds)
        except SetecError as e:
            fail(str(e))
        return [
            click_option(declared, read_env=self.read_env)
            for declared in plugins.declared_options()
            if any(kind in kinds for kind, _ in declared.owners)
        ]


class PluginFlagsGroup(PluginFlagsCommand, click.Group):
    """A command group (``setec-serve``) that also takes the options of the plugins
    its own flags select; they read their ``SETEC_*`` variables."""

    read_env = True

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        self.format_commands(ctx, formatter)
