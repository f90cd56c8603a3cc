"""Checking ``setec-serve`` command lines written in the docs against the real command:
which command a line names, and the flags it may use there."""

from __future__ import annotations

import click

from setec_cli.serve import cli


def flags_of(command: click.Command) -> set[str]:
    """Every flag spelling of ``command``'s options (not its arguments), with those the
    installed plugins give it (``--backup-region``, ``--policy-file``, ...)."""
    with click.Context(command) as ctx:
        params = command.get_params(ctx)
    return {opt for p in params if isinstance(p, click.Option) for opt in p.opts}


def resolve(tokens: list[str]) -> tuple[click.Command, set[str]]:
    """Follow ``tokens`` (a command line without ``setec-serve``) down the command
    groups; return the command they reach and the flags known there, asserting that
    each flag on the line is one of them."""
    command: click.Command = cli
    known = flags_of(cli)
    for token in tokens:
        if token.startswith("--"):
            assert token.split("=")[0] in known, (token, tokens)
        elif isinstance(command, click.Group) and token in command.commands:
            command = command.commands[token]
            known |= flags_of(command)
    return command, known
