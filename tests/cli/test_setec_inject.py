"""``setec inject``: a template's references filled with secrets, written whole or not
at all, readable by the owner only; template mistakes named by line and column.

Every run goes through the real ``setec`` console script against a real server on
loopback; :func:`setec` checks that no secret value ever reaches stdout or stderr of a
failed run.
"""

from __future__ import annotations

import itertools
import os
import pty
import stat
import subprocess
from pathlib import Path

import pytest
from console_scripts import clean_env, console_script, run_setec

from setec_cli.template import Reference, TemplateError, parse_template
from setec_core.testing import audit_entries
from setec_core.testing.server import LocalServer

SECRET = "s3cret-d0-not-print-7c1e"

_names = itertools.count()


@pytest.fixture
def prefix() -> str:
    """A prefix no other test uses."""
    return f"inject/t{next(_names)}"


def setec(
    *args: str, server: str, stdin: bytes = b"", cwd: Path | None = None, stdout: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS``; a failed run never prints the secret, on either stream."""
    proc = run_setec(*args, server=server, stdin=stdin, cwd=cwd, stdout=stdout)
    if proc.returncode != 0:
        assert SECRET.encode() not in (proc.stdout or b"") + proc.stderr
    return proc


def gets_since(server: LocalServer, before: int) -> list[str]:
    """The names of the secrets fetched since audit entry ``before``."""
    return [e["secret"] for e in audit_entries(server.db)[before:] if e["action"] == "get"]


def test_template_to_stdout(server: LocalServer, prefix: str) -> None:
    """References are replaced by the active values, {{ "{{" }} writes {{, other text
    (a lone }}, JSON braces) is copied as it is; each secret is fetched once, in order."""
    client = server.client()
    client.put(f"{prefix}/db", SECRET.encode())
    client.put(f"{prefix}/api key", "caf\u00e9\n".encode())
    template = (
        '{"password": "{{ setec "'
        + prefix
        + '/db" }}", "again": "{{setec "'
        + prefix
        + '/db"}}"}\n'
        'key: {{\tsetec  "' + prefix + '/api key"\t}}}} and {{ "{{" }} literal\n'
    )
    before = len(audit_entries(server.db))
    proc = setec("inject", stdin=template.encode(), server=server.url)
    assert (proc.returncode, proc.stderr) == (0, b"Injected 2 secrets into standard output\n")
    assert proc.stdout.decode() == (
        f'{{"password": "{SECRET}", "again": "{SECRET}"}}\nkey: caf\u00e9\n}}}} and {{{{ literal\n'
    )
    assert gets_since(server, before) == [f"{prefix}/db", f"{prefix}/api key"]


def test_template_without_references_needs_no_server(tmp_path: Path) -> None:
    """A template with no reference is copied, even with no server set; -q silences the
    summary."""
    template = tmp_path / "plain.tpl"
    template.write_text('no secrets {{ "{{" }} here\n')
    proc = run_setec("inject", "-q", "-i", str(template))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"no secrets {{ here\n", b"")


def test_out_file_is_0600_and_replaces_the_old_one(
    server: LocalServer, prefix: str, tmp_path: Path
) -> None:
    """-o writes a 0600 file even with umask 0 and over a 0644 file, leaving no
    temporary file behind."""
    server.client().put(f"{prefix}/db", SECRET.encode())
    template = tmp_path / "app.conf.tpl"
    template.write_text(f'password = {{{{ setec "{prefix}/db" }}}}\n')
    out = tmp_path / "app.conf"
    out.write_text("old\n")
    out.chmod(0o644)
    old = os.umask(0)
    try:
        proc = setec("inject", "-i", str(template), "-o", str(out), server=server.url)
    finally:
        os.umask(old)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert proc.stderr == f'Injected 1 secret into "{out}"\n'.encode()
    assert out.read_text() == f"password = {SECRET}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf", "app.conf.tpl"]


def test_relative_out_file_and_in_place(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """-o with a bare file name writes in the working directory; -o may be the template
    itself (it is read whole before anything is written)."""
    server.client().put(f"{prefix}/db", b"v")
    (tmp_path / "t").write_text(f'x={{{{ setec "{prefix}/db" }}}}\n')
    proc = setec("inject", "-i", "t", "-o", "t", server=server.url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "t").read_text() == "x=v\n"


def test_failed_fetch_writes_nothing(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """A secret that cannot be fetched: the message names it and where it is referenced;
    an existing output file is untouched (same content, same inode), no new file or
    temporary file appears, and nothing reaches stdout."""
    server.client().put(f"{prefix}/db", SECRET.encode())
    template = tmp_path / "app.tpl"
    template.write_text(f'a={{{{ setec "{prefix}/db" }}}}\n\n  b={{{{ setec "{prefix}/nope" }}}}\n')
    out = tmp_path / "app.conf"
    out.write_text("previous\n")
    inode = out.stat().st_ino
    proc = setec("inject", "-i", str(template), "-o", str(out), server=server.url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr == (
        f'Error: failed to get secret "{prefix}/nope" ({template}:3:5): not found\n'.encode()
    )
    assert (out.read_text(), out.stat().st_ino) == ("previous\n", inode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf", "app.tpl"]
    to_stdout = setec("inject", "-i", str(template), server=server.url)
    assert (to_stdout.returncode, to_stdout.stdout) == (1, b"")


def test_symlink_at_target_is_replaced_not_followed(
    server: LocalServer, prefix: str, tmp_path: Path
) -> None:
    """-o onto a symlink: the link becomes a 0600 file; what it pointed at (which could
    be anyone's file) is untouched."""
    server.client().put(f"{prefix}/db", SECRET.encode())
    template = tmp_path / "t"
    template.write_text(f'{{{{ setec "{prefix}/db" }}}}')
    victim = tmp_path / "someone-elses-file"
    victim.write_text("precious")
    victim.chmod(0o644)
    link = tmp_path / "out.conf"
    link.symlink_to(victim)
    proc = setec("inject", "-i", str(template), "-o", str(link), server=server.url)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert link.read_text() == SECRET


def test_output_that_cannot_be_written(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """A missing directory, a path through a file, or a directory as -o: a clear message
    naming the path, before any secret is fetched, and nothing left behind."""
    server.client().put(f"{prefix}/db", SECRET.encode())
    template = tmp_path / "t"
    template.write_text(f'{{{{ setec "{prefix}/db" }}}}')
    before = len(audit_entries(server.db))
    missing = setec(
        "inject", "-i", str(template), "-o", str(tmp_path / "no" / "app.conf"), server=server.url
    )
    assert (missing.returncode, missing.stderr) == (
        1,
        f'Error: cannot write "{tmp_path}/no/app.conf": the directory "{tmp_path}/no" does not '
        "exist; create it first\n".encode(),
    )
    through = setec("inject", "-i", str(template), "-o", f"{template}/x", server=server.url)
    assert (
        through.stderr
        == f'Error: cannot write "{template}/x": "{template}" is not a directory\n'.encode()
    )
    (tmp_path / "d").mkdir()
    into_dir = setec("inject", "-i", str(template), "-o", str(tmp_path / "d"), server=server.url)
    assert into_dir.stderr == (
        f'Error: cannot write "{tmp_path}/d": it is a directory; give the path of a file '
        "to write (it is created, or replaced if it exists)\n".encode()
    )
    assert gets_since(server, before) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "t"]
    assert list((tmp_path / "d").iterdir()) == []


@pytest.mark.parametrize(
    ("value", "what"),
    [(b"\xff" + SECRET.encode(), "not UTF-8"), (SECRET.encode() + b"\0", "NUL")],
)
def test_binary_value_is_refused(
    server: LocalServer, prefix: str, tmp_path: Path, value: bytes, what: str
) -> None:
    """A value that is not UTF-8 text, or holds a NUL: refused naming the secret and
    where it is referenced, suggesting setec get; the value is never printed."""
    name = f"{prefix}/bin"
    server.client().put(name, value)
    out = tmp_path / "out"
    proc = setec(
        "inject", "-o", str(out), stdin=f'k: {{{{ setec "{name}" }}}}'.encode(), server=server.url
    )
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert (
        proc.stderr
        == (
            f'Error: secret "{name}" (<stdin>:1:4) is not text (not UTF-8, or it holds a NUL '
            "byte), so it cannot go in a template; write it to a file of its own: "
            f'setec get "{name}" -o FILE\n'
        ).encode()
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            'ok {{ setec "a" }}\nbad: {{ setec "a"\n',
            "2:6: unterminated {{: no }} before the end of the line (a reference fits on one "
            'line; write a literal {{ as {{ "{{" }})',
        ),
        ("x\ny\n  {{", "3:3: unterminated {{"),
        ('{{ setec "a\n" }}', "1:1: not a valid quoted string: no closing quote on the line"),
        (
            "line one\n{{ .Values.password }}\n",
            '2:1: unknown directive ".Values.password": a reference is {{ setec "NAME" }}; '
            'write a literal {{ as {{ "{{" }}',
        ),
        ('{{ secret "a" }}', '1:1: unknown directive "secret"'),
        ('{{ setecx "a" }}', '1:1: unknown directive "setecx"'),
        ("{{ }}", '1:1: empty directive "{{ }}"'),
        (
            "{{ setec a }}",
            '1:1: expected a quoted secret name after setec, as in {{ setec "prod/db/password" }}',
        ),
        ('{{ setec "a" "b" }}', "1:1: expected }} after the quoted string"),
        ('{{ setec "" }}', "1:1: the secret name is empty"),
        ('{{ setec "\\q" }}', "1:1: not a valid quoted string: Invalid \\escape"),
        ('{{ "\\ud800" }}', "1:1: the quoted string holds an unpaired surrogate escape"),
    ],
)
def test_template_errors(server: LocalServer, tmp_path: Path, template: str, message: str) -> None:
    """Each template mistake: exit 1, FILE:LINE:COLUMN and what was expected, before any
    request, and no output file."""
    path = tmp_path / "bad.tpl"
    path.write_text(template)
    out = tmp_path / "out"
    before = len(audit_entries(server.db))
    proc = setec("inject", "-i", str(path), "-o", str(out), server=server.url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr.startswith(f"Error: {path}:{message}".encode()), proc.stderr
    assert proc.stderr.count(b"\n") == 1
    assert len(audit_entries(server.db)) == before
    assert not out.exists()


def test_template_that_cannot_be_read(server: LocalServer, tmp_path: Path) -> None:
    """A missing template or one that is not UTF-8: the message names it (and the line)."""
    missing = setec("inject", "-i", str(tmp_path / "nope"), server=server.url)
    assert (missing.returncode, missing.stderr) == (
        1,
        f'Error: cannot read the template "{tmp_path}/nope": No such file or directory; '
        "check the path and that you may read the file\n".encode(),
    )
    binary = setec("inject", stdin=b"a\nb\xff\n", server=server.url)
    assert (binary.returncode, binary.stderr) == (1, b"Error: <stdin>:2: not UTF-8 text\n")


def test_refuses_to_print_to_a_terminal_unless_forced(server: LocalServer, prefix: str) -> None:
    """Values are not printed to a terminal unless --force."""
    server.client().put(f"{prefix}/db", SECRET.encode())
    template = f'{{{{ setec "{prefix}/db" }}}}\n'.encode()
    master, slave = pty.openpty()
    try:
        refused = setec("inject", stdin=template, server=server.url, stdout=slave)
        forced = setec("inject", "--force", stdin=template, server=server.url, stdout=slave)
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert (refused.returncode, refused.stderr) == (
        1,
        b"Error: refusing to print secret values to a terminal; redirect the output "
        b"(setec inject ... > FILE), use -o FILE, or pass --force\n",
    )
    assert forced.returncode == 0
    assert shown.replace(b"\r\n", b"\n") == f"{SECRET}\n".encode()


def test_parse_template_keeps_text_exactly() -> None:
    """The parser splits text and references, keeping line ends (CRLF too) and braces
    outside directives as they are, and records where each reference starts."""
    template = parse_template('a}}\r\n\t{{ setec "x\\"y" }}{{"}}"}}\n', "t")
    assert template.parts == ("a}}\r\n\t", Reference('x"y', 2, 2), "}}", "\n")
    assert template.render({'x"y': "V"}) == "a}}\r\n\tV}}\n"
    with pytest.raises(TemplateError, match=r"^t:1:1: "):
        parse_template("{{", "t")


def test_template_from_a_terminal_is_a_usage_error(server: LocalServer) -> None:
    """Without -i, standard input must be a file or pipe: waiting for a template typed
    at a terminal would look like a hang."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [console_script("setec"), "inject"],
            stdin=slave,
            capture_output=True,
            env=clean_env(server.url),
            timeout=30,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2
    assert proc.stderr.endswith(b"Error: give the template with -i TEMPLATE, or pipe it in\n")
