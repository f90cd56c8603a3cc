"""docs/cli.md's ``console`` examples, re-run against a real dev server, so that the page
cannot drift from what ``setec`` prints.

How the page is read: in a ```` ```console ```` block, a line starting with ``$ `` is a
command (a line ending in ``\\`` continues on the next), and the lines after it, up to
the next command or the end of the block, are what it printed. Every command runs with
``bash -c`` in one working directory, in the page's order, against one server, so state
carries from block to block as the page's narrative does. What a command printed to
stdout and stderr is compared, exactly, with what the page shows, after putting back
what legitimately varies:

- the server's URL (the page's server is ``http://127.0.0.1:8080``, ours a free port);
- the minute in confirmation tokens (``<minute>.<digest>``): a token on the page's
  command line gets the minute of the token the CLI last printed in its "use token"
  message, and a minute the CLI prints is put back to the page's. The digest is never
  touched: it is checked as printed;
- the times a secret was last accessed (RFC 3339 in UTC, ``2026-12-02T12:00:07Z``): each
  one printed is put back to the page's at the same place.

The page shows what a pipe receives (so no import progress bar), except for the
commands in :data:`TERMINAL`, which run with stdout and stderr on a pseudo-terminal.
Commands that cannot run as written are in :data:`NOT_RUN`, state the narrative assumes
without showing it is made by :data:`SETUP`, and a ``cat FILE`` of a file that does not
exist yet shows an input file: the test writes it with the content shown.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serve_process import ServeProcess

from setec_core.client import Client

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
DOC_SERVER = "http://127.0.0.1:8080"

NOT_RUN: dict[str, str] = {
    "setec-serve --dev &                  # 127.0.0.1:8080, every local caller a superuser": (
        "the test starts its own dev server, on a free port"
    ),
    "export SETEC_SERVER=http://127.0.0.1:8080": "the test sets SETEC_SERVER for every command",
    "setec put dev/typed": (
        "interactive: a value typed twice at hidden prompts (tests/cli drives those in a pty)"
    ),
}
"""Commands of the page that are not run, each with the reason."""

TERMINAL: dict[str, str] = {
    "setec get dev/hello-world": "the value and the newline setec adds for a terminal",
}
"""Commands whose output the page shows as on a terminal."""


def _hello_world_as_put_leaves_it(client: Client, workdir: Path) -> None:
    """The list, info and get sections show dev/hello-world as the put and activate
    sections below leave it."""
    client.put("dev/hello-world", b"hello, world")
    client.put("dev/hello-world", b"hunter2")
    client.activate("dev/hello-world", 2)


def _no_hello_world(client: Client, workdir: Path) -> None:
    """The put section starts dev/hello-world afresh, at version 1."""
    client.delete("dev/hello-world")


def _myapp_as_import_leaves_it(client: Client, workdir: Path) -> None:
    """The run section uses the secrets the import section below creates."""
    client.put("prod/myapp/DB_PASSWORD", b"correct horse $battery")
    client.put("prod/myapp/API_KEY", b"abc123")


def _no_myapp_and_a_broken_env(client: Client, workdir: Path) -> None:
    """The import section creates prod/myapp/ afresh, and reads a broken.env it does
    not show (its line 2 is not KEY=value)."""
    client.delete("prod/myapp/DB_PASSWORD")
    client.delete("prod/myapp/API_KEY")
    (workdir / "broken.env").write_text("DB_PASSWORD=x\nthis is not a setting\n")


def _hello_world_again(client: Client, workdir: Path) -> None:
    """The set-info section shows dev/hello-world as the list section does."""
    client.delete("dev/hello-world")
    _hello_world_as_put_leaves_it(client, workdir)


SETUP: dict[str, Callable[[Client, Path], None]] = {
    "## list": _hello_world_as_put_leaves_it,
    "## set-info": _hello_world_again,
    "## put": _no_hello_world,
    "## run": _myapp_as_import_leaves_it,
    "## import": _no_myapp_and_a_broken_env,
}
"""Run before the first command under each heading; the docstring says why."""

TOKEN = re.compile(r"\b([0-9a-f]+)(\.[0-9a-f]{16})\b")
PRINTED_TOKEN = re.compile(r'(use token ")([0-9a-f]+)(\.[0-9a-f]{16}")')
CAT = re.compile(r"cat (\S+)")
TIME = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")


def put_back_times(actual: str, expected: str) -> str:
    """``actual`` with its RFC 3339 times replaced, in order, by those of ``expected``
    (when both have as many): when a secret was last accessed varies from run to run."""
    shown = TIME.findall(expected)
    if len(TIME.findall(actual)) != len(shown):
        return actual
    times = iter(shown)
    return TIME.sub(lambda m: next(times), actual)


@dataclass
class Example:
    """One ``$ `` command of the page and the output shown after it."""

    line: int
    block: int
    section: str
    command: str
    output: str = ""


def read_examples(text: str) -> list[Example]:
    """The commands of every ```` ```console ```` block of ``text``, in order."""
    examples: list[Example] = []
    section, fence, block = "", None, 0
    for number, raw in enumerate(text.splitlines(), 1):
        if fence is None:
            section = raw if raw.startswith("## ") else section
            if m := re.fullmatch(r"( *)```console", raw):
                fence, block = m.group(1) + "```", number
            continue
        if raw == fence:
            fence = None
            continue
        line = raw.removeprefix(fence[:-3])
        last = examples[-1] if examples and examples[-1].block == block else None
        if line.startswith("$ "):
            examples.append(Example(number, block, section, line[2:]))
        elif last is not None and last.command.endswith("\\") and not last.output:
            last.command += "\n" + line
        else:
            assert last is not None, f"docs/cli.md:{number}: output before any command"
            last.output += line + "\n"
    return examples


class Tokens:
    """Moves confirmation tokens between the page's minute and the current one."""

    def __init__(self) -> None:
        self.shift: int | None = None  # the CLI's minute minus the page's

    def in_command(self, command: str) -> str:
        """The command with each token's minute moved to the CLI's."""

        def move(m: re.Match[str]) -> str:
            assert self.shift is not None, f"{command!r}: a token before the CLI printed one"
            return f"{int(m.group(1), 16) + self.shift:x}{m.group(2)}"

        return TOKEN.sub(move, command)

    def in_output(self, actual: str, expected: str) -> str:
        """``actual`` with the minute of each printed token put back to the page's."""
        printed = PRINTED_TOKEN.search(actual)
        shown = PRINTED_TOKEN.search(expected)
        if printed is None or shown is None:
            return actual
        self.shift = int(printed.group(2), 16) - int(shown.group(2), 16)
        shift = self.shift
        return PRINTED_TOKEN.sub(
            lambda m: f"{m.group(1)}{int(m.group(2), 16) - shift:x}{m.group(3)}", actual
        )


def wait_for_a_fresh_minute(command: str, margin: float = 3) -> None:
    """Before a delete that will print a token, let a minute about to end go by, so
    the token still holds for the next command (it expires when Unix time is 1 mod 60)."""
    if re.match(r"setec delete(-version)? ", command) and not TOKEN.search(command):
        left = 60 - (time.time() - 1) % 60
        if left < margin:
            time.sleep(left + 0.05)


def run(command: str, cwd: Path, env: dict[str, str], *, terminal: bool) -> str:
    """What ``bash -c COMMAND`` writes to stdout and stderr, as one stream: through a
    pipe, or through a pseudo-terminal (with its "\\r\\n" read as "\\n")."""
    argv = ["bash", "-c", command]
    if not terminal:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
        return done.stdout.decode(errors="replace")
    master, slave = pty.openpty()
    output = b""
    try:
        with subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        ) as proc:
            os.close(slave)
            deadline = time.monotonic() + 30
            while select.select([master], [], [], max(0, deadline - time.monotonic()))[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the command has exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            proc.wait(30)
    finally:
        os.close(master)
    return output.decode(errors="replace").replace("\r\n", "\n")


def test_every_cli_doc_example_prints_what_the_doc_shows(tmp_path: Path) -> None:
    """docs/cli.md: every console example prints exactly what the page shows."""
    text = DOC.read_text()
    examples = read_examples(text)
    commands = [example.command for example in examples]
    for listed in (NOT_RUN, TERMINAL):
        stale = [command for command in listed if command not in commands]
        assert not stale, f"no longer in docs/cli.md, remove from the list: {stale}"
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert all(headings.count(heading) == 1 for heading in SETUP), headings

    workdir = tmp_path / "work"
    (tmp_path / "server").mkdir()
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETEC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    failures: list[str] = []
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path / "server") as server:
        env["SETEC_SERVER"] = server.url
        client = Client(server.url)
        tokens = Tokens()
        sections_set_up: set[str] = set()
        for example in examples:
            if example.command in NOT_RUN:
                continue
            if example.section in SETUP and example.section not in sections_set_up:
                sections_set_up.add(example.section)
                SETUP[example.section](client, workdir)
            if (m := CAT.fullmatch(example.command)) and not (workdir / m.group(1)).exists():
                (workdir / m.group(1)).write_text(example.output)
            wait_for_a_fresh_minute(example.command)
            actual = run(
                tokens.in_command(example.command),
                workdir,
                env,
                terminal=example.command in TERMINAL,
            )
            actual = tokens.in_output(actual.replace(server.url, DOC_SERVER), example.output)
            actual = put_back_times(actual, example.output)
            if actual != example.output:
                failures.append(
                    f"docs/cli.md:{example.line} (block at line {example.block}): "
                    f"$ {example.command}\n--- the page shows:\n{example.output}"
                    f"--- setec printed:\n{actual}--- end"
                )
        assert sections_set_up == set(SETUP), "a SETUP heading has no example under it"
    assert not failures, "\n\n".join(failures)
