"""The suite passes when it is started with SIGINT ignored (``&`` in a script,
``nohup``): tests that interrupt a child give it the default SIGINT, since an ignored
one is inherited."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

#: The tests that send SIGINT to a child.
INTERRUPTING = (
    "cli/test_setec_commands.py::test_put_interrupted_at_the_prompt",
    "e2e/test_serve.py::test_a_stop_signal_during_startup_never_hangs",
)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_tests_that_interrupt_children_pass_with_sigint_ignored() -> None:
    """pytest run on the tests that send SIGINT to a child, itself started with SIGINT
    ignored as a script's background job is: they pass."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(HERE / test) for test in INTERRUPTING)],
        cwd=HERE.parent, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=_ignore_sigint,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
