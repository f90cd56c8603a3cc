"""Shell completion as docs/cli.md, "Shell completion", sets it up: the real console
scripts print a completion script for bash, zsh and fish when the documented variable
is set, and the bash one, loaded into a real bash, completes commands and options."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from console_scripts import clean_env, console_script

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

#: (program, the variable docs/cli.md names for it)
PROGRAMS = [("setec", "_SETEC_COMPLETE"), ("setec-serve", "_SETEC_SERVE_COMPLETE")]
#: (shell, a line its completion script must have for PROGRAM)
SHELLS = [
    ("bash", "complete -o nosort -F {function} {program}"),
    ("zsh", "#compdef {program}"),
    ("fish", "complete --no-files --command {program} "),
]


def completion_script(program: str, variable: str, shell: str) -> str:
    """What ``VARIABLE=SHELL_source PROGRAM`` prints (the documented set-up command)."""
    proc = subprocess.run(
        [console_script(program)],
        env=clean_env(**{variable: f"{shell}_source"}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("program", "variable"), PROGRAMS)
@pytest.mark.parametrize(("shell", "line"), SHELLS)
def test_each_program_prints_a_completion_script(
    program: str, variable: str, shell: str, line: str
) -> None:
    """Each program, run with its variable set to ``SHELL_source``, prints that shell's
    completion script for itself, and docs/cli.md shows that exact command."""
    function = "_" + program.replace("-", "_") + "_completion"
    script = completion_script(program, variable, shell)
    assert line.format(function=function, program=program) in script
    assert f"{variable}={shell}_source {program}" in DOC.read_text()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("setec ge", {"get"}),
        ("setec list --j", {"--json"}),
        ("setec-serve --state", {"--state-dir"}),
        ("setec-serve audit ve", {"verify"}),
    ],
)
def test_bash_completes_with_the_loaded_script(words: str, expected: set[str]) -> None:
    """The bash script, loaded as docs/cli.md says (``eval "$(...)"``), completes
    commands and options when bash calls its completion function."""
    program = words.split()[0]
    variable = dict(PROGRAMS)[program]
    function = "_" + program.replace("-", "_") + "_completion"
    # The completion function runs the program, so its directory goes on PATH.
    directory = str(Path(console_script(program)).parent)
    script = (
        f'export PATH="{directory}:$PATH"\n'
        f'eval "$({variable}=bash_source {program})"\n'
        f"COMP_WORDS=({words}); COMP_CWORD={len(words.split()) - 1}\n"
        # bash calls the function with the command's name, which it runs.
        f"{function} {program}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == expected, proc.stdout + proc.stderr
    assert not re.search(r"Traceback|Error", proc.stderr), proc.stderr
