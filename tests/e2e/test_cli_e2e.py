"""``setec`` against a real ``setec-serve --dev`` subprocess: Go's worked example session
and a secret's whole life, every step through the console scripts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from console_scripts import console_script, run_setec
from serve_process import ServeProcess

from setec_cli.confirm import confirmation_token

SETEC = console_script("setec")


def setec(
    *args: str, server: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` with SETEC_SERVER set to ``server``; never a traceback."""
    return run_setec(*args, server=server, stdin=stdin, cwd=cwd)


_LAST_ACCESS = re.compile(rb" +LAST ACCESS$| +\d{4}-\d\d-\d\dT[\d:]+Z$|^Last access: +\S+\n", re.M)


def without_last_access(output: bytes) -> bytes:
    """``setec list`` or ``info`` output without its last-access column or line, whose
    times vary: the table Go's CLI prints."""
    assert b"LAST ACCESS" in output or b"Last access:" in output
    return _LAST_ACCESS.sub(b"", output)


def test_secret_lifecycle_against_setec_serve(tmp_path: Path) -> None:
    """Go's worked put session, then get, a second version, activate, list, info, run, export,
    and delete with its confirmation token, against ``setec-serve --dev``."""
    state = tmp_path / "state"
    with ServeProcess(
        "--dev", "--listen", "127.0.0.1:0", "--state-dir", str(state), cwd=tmp_path
    ) as serve:
        url = serve.url
        put = subprocess.run(
            [SETEC, "-s", url, "put", "dev/hello-world"],
            input=b"hello, world",
            capture_output=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SETEC_")},
            timeout=30,
            check=False,
        )
        assert (put.returncode, put.stdout, put.stderr) == (
            0,
            b'Secret saved as "dev/hello-world", version 1\n',
            b"Read 12 bytes from stdin\n",
        )
        assert setec("get", "dev/hello-world", server=url).stdout == b"hello, world"

        value_file = tmp_path / "v2"
        value_file.write_bytes(b"hello again\n")
        second = setec(
            "put", "dev/hello-world", "--from-file", str(value_file), "--trim-space", server=url
        )
        assert second.stdout == (
            b'Secret saved as "dev/hello-world", version 2\n'
            b"  To activate this version, run 'setec activate \"dev/hello-world\" 2'\n"
        )
        assert setec("activate", "dev/hello-world", "2", server=url).returncode == 0
        setec("put", "prod/db", server=url, stdin=b"pw")
        # Go's columns, then when each was last accessed (docs/api.md §9.5).
        assert without_last_access(setec("list", server=url).stdout) == (
            b"NAME            ACTIVE VERSIONS\n"
            b"dev/hello-world 2      1,2\n"
            b"prod/db         1      1\n"
        )
        assert without_last_access(setec("info", "dev/hello-world", server=url).stdout) == (
            b"Name:           dev/hello-world\nActive version: 2\nVersions:       1, 2\n"
        )

        check = "import os, sys; sys.exit(0 if os.environ['HELLO'] == 'hello again' else 3)"
        ran = setec(
            "run",
            "--secret",
            "HELLO=dev/hello-world",
            "--",
            sys.executable,
            "-c",
            check,
            server=url,
        )
        assert ran.returncode == 0
        exported = setec("export", "--prefix", "dev", "--format", "json", server=url)
        assert exported.stdout == b'{\n  "hello-world": "hello again"\n}\n'

        refused = setec("delete", "dev/hello-world", server=url)
        assert refused.returncode == 1
        m = re.fullmatch(
            rb'Error: confirmation required for "delete-secret:dev/hello-world", '
            rb'use token "([0-9a-f]+\.[0-9a-f]{16})"\n',
            refused.stderr,
        )
        assert m is not None, refused.stderr
        token = m.group(1).decode()
        if token != confirmation_token("delete-secret:dev/hello-world"):
            # The minute turned over between the two calls; the message names the new one.
            token = confirmation_token("delete-secret:dev/hello-world")
        deleted = setec("delete", "dev/hello-world", token, server=url)
        assert (deleted.returncode, deleted.stdout, deleted.stderr) == (
            0,
            b"",
            b'Deleted secret "dev/hello-world" (versions 1, 2)\n',
        )
        assert without_last_access(setec("list", server=url).stdout) == (
            b"NAME    ACTIVE VERSIONS\nprod/db 1      1\n"
        )
        assert serve.stop() == 0
    assert "hello, world" not in serve.output
