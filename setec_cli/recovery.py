"""The ``setec`` side of recoverable delete (docs/cli.md, "Recoverable delete"):
``setec undelete``, ``setec list --deleted``, and what ``setec delete`` says when the
server put the secret aside rather than deleting it.

Each needs a server that offers ``recoverable-delete``; against any other (a Go setec
server) the client refuses before sending anything, and the command says so in one
line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import click

from setec_cli.formats import go_quote, tabwrite
from setec_cli.options import (
    CommandError,
    check_name,
    client_command,
    inform,
    make_client,
    take_args,
)
from setec_core.errors import NotFound, SetecError
from setec_core.model import DeletedSecret
from setec_core.wire.extensions import RECOVERABLE_DELETE
from setec_core.wire.gotime import format_time


def purge_secret_request(name: str) -> str:
    """The request string a confirmation token for ``setec delete --purge NAME`` is made
    from: not a plain delete's, so that a token printed for one does not confirm the
    other."""
    return f"purge-secret:{name}"


def _when(moment: dt.datetime) -> str:
    # To the second: the window is days or hours, and a line of nanoseconds reads badly.
    return format_time(moment.replace(microsecond=0))


def deleted_table(secrets: Sequence[DeletedSecret]) -> str:
    """The output of ``setec list --deleted``: a table as ``setec list`` prints, with
    when each secret was deleted and when it goes for good (UTC)."""
    rows = ["NAME\tACTIVE\tVERSIONS\tDELETED\tPURGED AT\n"]
    for s in secrets:
        versions = ",".join(str(v) for v in s.versions)
        when = f"{_when(s.deleted_at)}\t{_when(s.purge_at)}"
        rows.append(f"{s.name}\t{s.active_version}\t{versions}\t{when}\n")
    return tabwrite("".join(rows))


def deleted_json(secret: DeletedSecret) -> dict[str, Any]:
    """The ``--json`` form of one secret pending deletion (documented in docs/cli.md)."""
    return {
        "name": secret.name,
        "versions": list(secret.versions),
        "active_version": secret.active_version,
        "deleted_at": format_time(secret.deleted_at),
        "purge_at": format_time(secret.purge_at),
    }


def list_deleted(client: Any, prefix: str) -> list[DeletedSecret]:
    """The secrets pending deletion whose names start with ``prefix``.

    :raises CommandError: if the server cannot list them (a Go server: it has no
        recoverable delete).
    """
    try:
        return [s for s in client.list_deleted() if s.name.startswith(prefix)]
    except SetecError as e:
        raise CommandError(f"failed to list deleted secrets: {e}") from None


def pending(client: Any, name: str) -> DeletedSecret | None:
    """The secret ``name`` if it is pending deletion, else ``None`` (also when the server
    has no recoverable delete or cannot say): for the lines ``setec delete`` prints."""
    try:
        if not client.offers(RECOVERABLE_DELETE):
            return None
        return next((s for s in client.list_deleted() if s.name == name), None)
    except SetecError:
        return None


def put_aside_line(secret: DeletedSecret) -> str:
    """What ``setec delete`` says of a secret the server put aside: until when, and how
    to bring it back or delete it now."""
    quoted = go_quote(secret.name)
    listed = ", ".join(str(v) for v in secret.versions)
    noun = "version" if len(secret.versions) == 1 else "versions"
    return (
        f"Deleted secret {quoted} ({noun} {listed}); the server keeps it until "
        f"{_when(secret.purge_at)}: 'setec undelete {quoted}' brings it back, "
        f"'setec delete --purge {quoted}' deletes it now"
    )


@client_command("undelete")
@click.argument("args", nargs=-1, metavar="NAME")
@click.pass_context
def undelete_command(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Bring back a secret that was deleted on a server with a recovery window.

    Every version comes back, and the active one stays active. "setec list --deleted"
    lists what can be brought back, and until when. Go setec has no such command.
    """
    (name,) = take_args("undelete", args, 1)
    client = make_client(ctx)
    check_name(name)
    try:
        client.undelete(name)
    except NotFound as e:
        raise CommandError(
            f"failed to undelete secret {go_quote(name)}: {e}; 'setec list --deleted' "
            "lists the secrets that can be brought back"
        ) from None
    except SetecError as e:
        raise CommandError(f"failed to undelete secret {go_quote(name)}: {e}") from None
    inform(f"Undeleted secret {go_quote(name)}")
