"""``setec run``: start a program with secrets in its environment. Go's CLI has none.

Which secret becomes which variable comes from three sources, most specific first:
``--secret VAR=NAME``, ``--env-file FILE`` (lines of ``VAR=NAME``) and ``--prefix
PREFIX`` (every secret under ``PREFIX/``, named by :func:`variable_name`). A variable
set by a more specific source is not taken from a less specific one; two settings of
one variable in the same source are refused.

The file given to ``--env-file`` is easily a file of values by mistake (Docker's
``VAR=value``), so its names are never printed, and are asked for only once one
``list`` call has shown them to be names of secrets: a value is then neither sent to
the server (whose logs would keep it) nor shown.

Each secret's active value is fetched once, all before the program starts (in one
request from a server that offers batch gets, 100 secrets a request); then setec
replaces itself with the program (``exec``), so nothing is written to disk and no setec
process stays around holding the values.
"""

from __future__ import annotations

import os
import signal
import string
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from setec_cli.dotenv import KEY_PATTERN
from setec_cli.formats import go_quote
from setec_cli.input_file import read_input, utf8_text
from setec_cli.options import TOKEN_ENV, CommandError, check_name, client_command, make_client
from setec_cli.prefetch import Prefetched
from setec_cli.supervise import OnChange, Policy, parse_signal, run_watching
from setec_core.errors import NotFound, SetecError

_VARIABLE_RULE = "a letter or _ followed by letters, digits or _"
#: The options that only mean something with --watch.
_WATCH_ONLY = ("on_change", "restart_signal", "restart_grace", "poll_interval")
_KEPT = frozenset(string.ascii_uppercase + string.digits + "_")
_QUOTES = "\"'"


class ProgramError(CommandError):
    """The program could not be started: exit 126, as a shell would."""

    exit_code = 126


class ProgramNotFoundError(ProgramError):
    """The program does not exist: exit 127, as a shell would."""

    exit_code = 127


@dataclass(frozen=True, slots=True)
class Binding:
    """One environment variable of the program and the secret it holds; ``source``
    says where the pairing came from (``--secret``, ``FILE:LINE`` or ``--prefix
    "P"``), for messages. ``hidden`` is true for a name from an env file, which may be
    a value written where a name belongs: messages never show it."""

    var: str
    name: str
    source: str
    hidden: bool = False

    def describe(self) -> str:
        """The secret as messages name it: ``secret "NAME"``, or for a hidden name
        ``the secret on FILE:LINE``."""
        return f"the secret on {self.source}" if self.hidden else f"secret {go_quote(self.name)}"

    def failure(self, reason: str, *, missing: bool) -> str:
        """The message for a secret that cannot be fetched, because of ``reason``.

        :param missing: whether the secret was not found; for a hidden name, the
            message then says that an env file holds names, not values.
        """
        if not self.hidden:
            where = "" if self.source == "--secret" else f" ({self.source})"
            return f"failed to get secret {go_quote(self.name)} for {self.var}{where}: {reason}"
        message = f"failed to get the secret for {self.var} ({self.source}): {reason}"
        if missing:
            message += "; each line must be VAR=secret-name, not a value"
        return message


def parse_secret_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Parse each ``--secret VAR=NAME`` into ``(VAR, NAME)``.

    :raises click.BadParameter: for a missing ``=``, a VAR that is not a variable name,
        or a VAR given twice.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        var, sep, name = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{go_quote(value)} is not VAR=NAME", ctx, param)
        if not KEY_PATTERN.fullmatch(var):
            raise click.BadParameter(
                f"{go_quote(var)} is not a variable name ({_VARIABLE_RULE})", ctx, param
            )
        if any(var == seen for seen, _ in pairs):
            raise click.BadParameter(f"{var} is given twice", ctx, param)
        pairs.append((var, name))
    return pairs


def parse_prefix_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[str]:
    """Normalise each ``--prefix``: trailing slashes go (``prod/app/`` is ``prod/app``).

    :raises click.BadParameter: for a prefix that is empty or only slashes.
    """
    prefixes = []
    for value in values:
        prefix = value.rstrip("/")
        if not prefix:
            raise click.BadParameter("must name a prefix, e.g. --prefix prod/myapp", ctx, param)
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def variable_name(rest: str) -> str:
    """The environment variable ``--prefix`` makes of a secret's name after the prefix
    and its slash: ASCII letters upper-cased, ASCII digits and ``_`` kept, every other
    character (``/``, ``-``, ``.``, a space, anything non-ASCII) replaced by ``_``,
    and ``_`` put in front of a leading digit. ``db/password`` is ``DB_PASSWORD``,
    ``api-key`` is ``API_KEY``, ``2fa.seed`` is ``_2FA_SEED``. An empty ``rest`` gives
    ``""``, which is not a variable name."""
    upper = (c.upper() if c in string.ascii_letters else c for c in rest)
    var = "".join(c if c in _KEPT else "_" for c in upper)
    return "_" + var if var[:1].isdigit() else var


def parse_env_file(text: str, filename: str) -> list[tuple[str, str, int]]:
    """Parse an ``--env-file``: one ``VAR=NAME`` a line, as ``(VAR, NAME, line)``.

    Blank lines and lines starting with ``#`` are skipped; spaces around ``VAR``,
    ``=`` and ``NAME`` are not part of them. A ``#`` after the name is part of the
    name, since a secret name may hold one.

    :raises CommandError: naming the file and line (never quoting it) for a line that
        is not ``VAR=NAME``, a VAR set twice, or a quoted ``VAR="..."`` (dotenv's
        syntax for a value: the file holds values, not names).
    """
    found: list[tuple[str, str, int]] = []
    first: dict[str, int] = {}
    lines = text.removeprefix("\ufeff").split("\n")
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip(" \t\r")
        if not stripped or stripped.startswith("#"):
            continue
        var, sep, name = (part.strip(" \t\r") for part in stripped.partition("="))
        if not sep or not name or not KEY_PATTERN.fullmatch(var):
            raise CommandError(
                f"{filename}:{lineno}: expected VAR=SECRET-NAME, where VAR is "
                f"{_VARIABLE_RULE} (the line is not shown: it may hold a secret)"
            )
        if len(name) >= 2 and name[0] in _QUOTES and name[-1] == name[0]:
            raise CommandError(
                f"{filename}:{lineno}: {var} is given a quoted value, so this file holds "
                "values; --env-file takes VAR=secret-name lines (the line is not shown: "
                "it may hold a secret)"
            )
        if var in first:
            raise CommandError(
                f"{filename}:{lineno}: {var} is set again (first on line {first[var]})"
            )
        first[var] = lineno
        found.append((var, name, lineno))
    return found


def read_env_files(paths: Sequence[str]) -> list[Binding]:
    """Read every ``--env-file``, in order.

    :raises CommandError: for a file that cannot be read or parsed, or a VAR that two
        files set (naming both places).
    """
    bindings: list[Binding] = []
    for path in paths:
        text = utf8_text(read_input(path, "--env-file "), path)
        for var, name, lineno in parse_env_file(text, path):
            source = f"{path}:{lineno}"
            earlier = next((b for b in bindings if b.var == var), None)
            if earlier is not None:
                raise CommandError(f"{source}: {var} is set again (first on {earlier.source})")
            bindings.append(Binding(var, name, source, hidden=True))
    return bindings


def prefix_bindings(
    names: Iterable[str], prefixes: Sequence[str], taken: Iterable[str]
) -> list[Binding]:
    """The variables ``--prefix`` makes of the secret ``names`` (as ``list`` returned
    them), leaving out the variables in ``taken`` (set by ``--secret`` or an env file).

    :raises CommandError: before anything is fetched, for a prefix with no secrets
        under it, a secret whose name makes no variable, or two secrets that make the
        same variable (naming both; setting that variable with ``--secret`` settles it).
    """
    skip = set(taken)
    names = list(names)
    bindings: dict[str, Binding] = {}
    for prefix in prefixes:
        under = [name for name in names if name.startswith(prefix + "/")]
        if not under:
            raise CommandError(
                f"no secrets under {go_quote(prefix + '/')} (that you may list); "
                "check the prefix with 'setec list'"
            )
        source = f"--prefix {go_quote(prefix)}"
        for name in under:
            var = variable_name(name[len(prefix) + 1 :])
            if not KEY_PATTERN.fullmatch(var):
                raise CommandError(
                    f"secret {go_quote(name)} has no name after the prefix {go_quote(prefix)}, "
                    "so it cannot become an environment variable; rename it, or use "
                    "--secret VAR=NAME for the secrets under that prefix"
                )
            if var in skip:
                continue
            other = bindings.get(var)
            if other is not None and other.name != name:
                raise CommandError(
                    f"secrets {go_quote(other.name)} and {go_quote(name)} both become the "
                    f"variable {var}; rename one, or choose with --secret {var}=NAME"
                )
            bindings.setdefault(var, Binding(var, name, source))
    return list(bindings.values())


def refuse_unlisted(bindings: Iterable[Binding], names: Iterable[str]) -> None:
    """Refuse a hidden binding (from an env file) whose name is not among ``names``
    (what ``list`` returned), before anything is fetched: such a "name" is most likely
    a value, which a get would write into the server's logs.

    :raises CommandError: naming the variable and ``FILE:LINE``, never the name.
    """
    known = set(names)
    for b in bindings:
        if b.hidden and b.name not in known:
            raise CommandError(b.failure("not found among the secrets you may list", missing=True))


DEFAULT = ParameterSource.DEFAULT


def _watch_option(
    parse: Callable[[Any], Any],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option callback that parses the value with ``parse``, a ValueError becoming
    click's one-line usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise click.BadParameter(str(e), ctx, param) from None

    return callback


def environment_value(binding: Binding, value: bytes) -> str:
    """Check that a secret's value can be an environment variable and return it as text.

    :raises CommandError: naming the secret (as :meth:`Binding.describe` does) and the
        variable, never the value, if the value holds a NUL byte or is not UTF-8 text.
    """
    secret, var = binding.describe(), binding.var
    if b"\0" in value:
        raise CommandError(
            f"{secret} contains a NUL byte, which the environment variable {var} cannot hold"
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(
            f"{secret} is not UTF-8 text, so it cannot be the environment variable {var}"
        ) from None


@client_command(
    "run",
    # Everything from the program's name on is the program's, options included.
    context_settings={"allow_interspersed_args": False},
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="VAR=NAME",
    callback=parse_secret_option,
    help="Set the environment variable VAR to the active value of secret NAME (repeatable).",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    metavar="FILE",
    help="Read VAR=NAME lines from FILE, as --secret takes them (repeatable).",
)
@click.option(
    "--prefix",
    "prefixes",
    multiple=True,
    metavar="PREFIX",
    callback=parse_prefix_option,
    help="Set a variable for every secret under PREFIX/: PREFIX/db-url becomes DB_URL "
    "(repeatable; see docs/cli.md for the rule).",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Stay running: when a secret gets a new active version, restart COMMAND with "
    "the new values (or see --on-change).",
)
@click.option(
    "--on-change",
    default="restart",
    show_default=True,
    metavar="restart|signal:NAME",
    callback=_watch_option(OnChange.parse),
    help="With --watch: restart COMMAND, or only send it a signal (signal:HUP).",
)
@click.option(
    "--restart-signal",
    default="TERM",
    show_default=True,
    metavar="SIGNAL",
    callback=_watch_option(parse_signal),
    help="With --watch: the signal that stops COMMAND for a restart.",
)
@click.option(
    "--restart-grace",
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    callback=_watch_option(float),
    help="With --watch: how long COMMAND has to exit after the restart signal before "
    "it is killed (SIGKILL).",
)
@click.option(
    "--poll-interval",
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    callback=_watch_option(float),
    help="With --watch: how often to ask for new versions (a server that offers "
    "watch tells at once as well).",
)
@click.argument(
    "command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]..."
)
@click.pass_context
def run_command(
    ctx: click.Context,
    secrets: list[tuple[str, str]],
    env_files: tuple[str, ...],
    prefixes: list[str],
    watch: bool,
    on_change: OnChange,
    restart_signal: signal.Signals,
    restart_grace: float,
    poll_interval: float,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with secrets in its environment.

    Example: setec run --secret DB_PASS=prod/db/password -- ./server --port 8080

    --secret wins over --env-file, which wins over --prefix, for the same variable.
    Every secret is fetched before COMMAND starts; if any fetch fails, COMMAND does not
    run. SETEC_TOKEN is not passed on: COMMAND gets its secrets, not the credential
    to fetch more.
    """
    if not (secrets or env_files or prefixes):
        raise click.UsageError("give at least one of --secret, --env-file or --prefix")
    if not watch:
        given = [p for p in _WATCH_ONLY if ctx.get_parameter_source(p) is not DEFAULT]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} needs --watch")
    bindings = [Binding(var, check_name(name), "--secret") for var, name in secrets]
    explicit = {b.var for b in bindings}
    bindings += [b for b in read_env_files(env_files) if b.var not in explicit]
    client = make_client(ctx)
    if prefixes or any(b.hidden for b in bindings):
        try:
            names = [info.name for info in client.list()]
        except SetecError as e:
            raise CommandError(f"failed to list secrets: {e}") from None
        # Env-file names need no check_name: the file was decoded as strict UTF-8, and
        # they must be listed names anyway.
        refuse_unlisted(bindings, names)
        made = prefix_bindings(names, prefixes, (b.var for b in bindings))
        # A listed name the client cannot send (a lone surrogate from the server's
        # JSON) is refused here, not as an internal error in the get.
        bindings += [Binding(b.var, check_name(b.name), b.source) for b in made]
    prefetched = Prefetched(client, (b.name for b in bindings))
    fetched: dict[str, bytes] = {}
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    for b in bindings:
        if b.name not in fetched:
            try:
                fetched[b.name] = prefetched.get(b.name).value
            except SetecError as e:
                missing = isinstance(e, NotFound)
                raise CommandError(b.failure(str(e), missing=missing)) from None
        env[b.var] = environment_value(b, fetched[b.name])
    if watch:
        base = {k: v for k, v in env.items() if k not in {b.var for b in bindings}}

        def environment(values: Mapping[str, bytes]) -> dict[str, str]:
            return {**base, **{b.var: environment_value(b, values[b.name]) for b in bindings}}

        held = {b.name: prefetched.get(b.name) for b in bindings}
        policy = Policy(on_change, restart_signal, restart_grace)
        ctx.exit(run_watching(client, held, environment, command, policy, poll_interval))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - running the user's program is the point
    except OSError as e:
        error = ProgramNotFoundError if isinstance(e, FileNotFoundError) else ProgramError
        raise error(
            f"cannot run {go_quote(command[0])}: {e.strerror or type(e).__name__}"
        ) from None
