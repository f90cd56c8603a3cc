"""The pytest plugin (``setec_core.testing.pytest_plugin``) and docs/testing.md's
examples, run through pytest itself with ``pytester``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"

# Strict, like our own configuration: a warning in a user's test is a failure. Without
# hypothesis's plugin: pytester drops the modules each inner run imports, and hypothesis
# re-imports (and assertion-rewrites) about 170 of them per run, a second each.
ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "error")


def doc_examples() -> list[tuple[str, str]]:
    """Each ```python block of docs/testing.md with the heading it sits under."""
    examples = []
    for section in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        heading = section.splitlines()[0]
        examples += [(heading, code) for code in re.findall(r"```python\n(.*?)```", section, re.S)]
    return examples


EXAMPLES = doc_examples()


def test_the_store_example_is_in_the_doc() -> None:
    """docs/testing.md keeps its main example, with the Store, the ticker and the clock."""
    headings = [heading for heading, _ in EXAMPLES]
    assert "Example: a Store that polls when the test says" in headings
    main = dict(EXAMPLES)["Example: a Store that polls when the test says"]
    for name in ("setec_client", "setec_ticker.poll()", "setec_clock", "Store("):
        assert name in main


@pytest.mark.parametrize("code", [pytest.param(code, id=heading) for heading, code in EXAMPLES])
def test_doc_example_passes(pytester: pytest.Pytester, code: str) -> None:
    """Every example in docs/testing.md is a test file that passes as written."""
    pytester.makepyfile(test_example=code)
    result = pytester.runpytest(*ARGS)
    tests = len(re.findall(r"^def test_", code, re.M))
    assert tests > 0
    result.assert_outcomes(passed=tests)


def test_fixtures_for_a_user_test_file(pytester: pytest.Pytester) -> None:
    """A user's test file gets every fixture by name, with no conftest: the client talks
    to the server, which serves setec_db; the ticker and the clock are the fakes."""
    pytester.makepyfile(
        test_user="""
        from setec_core.client import Client
        from setec_core.database import Database
        from setec_core.testing import SUPERUSER
        from setec_core.testing.clock import FakeClock, FakeTicker
        from setec_core.testing.server import LocalServer

        def test_types(setec_db, setec_server, setec_client, setec_ticker, setec_clock):
            assert isinstance(setec_db, Database)
            assert isinstance(setec_server, LocalServer)
            assert isinstance(setec_client, Client)
            assert isinstance(setec_ticker, FakeTicker)
            assert isinstance(setec_clock, FakeClock)
            assert setec_clock() == 1
            assert setec_server.db is setec_db
            assert setec_client.server == setec_server.url

        def test_one_database(setec_db, setec_client):
            setec_db.put(SUPERUSER, "seeded", b"a")
            assert setec_client.get("seeded").value == b"a"
            setec_client.put("sent", b"b")
            assert setec_db.get(SUPERUSER, "sent").value == b"b"
        """
    )
    pytester.runpytest(*ARGS).assert_outcomes(passed=2)


def test_setec_db_is_fresh_per_test(pytester: pytest.Pytester) -> None:
    """Each test gets a new, empty database (and server), whatever the last one wrote;
    the database is closed after its test."""
    pytester.makepyfile(
        test_fresh="""
        import pytest

        from setec_core.errors import AuditError
        from setec_core.testing import SUPERUSER

        seen = []

        @pytest.mark.parametrize("run", [1, 2, 3])
        def test_starts_empty(setec_db, setec_client, run):
            assert setec_db.list(SUPERUSER) == []
            assert setec_client.list() == []
            setec_client.put("left/behind", b"x")
            seen.append((setec_db, setec_client.server))

        def test_all_different():
            assert len({id(db) for db, _ in seen}) == 3
            assert len({url for _, url in seen}) == 3
            for db, _ in seen:
                with pytest.raises(AuditError, match="closed"):
                    db.list(SUPERUSER)
        """
    )
    pytester.runpytest(*ARGS).assert_outcomes(passed=4)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    """``-p no:setec`` turns the plugin off: its fixtures are unknown."""
    pytester.makepyfile(test_off="def test_needs_db(setec_db):\n    pass\n")
    result = pytester.runpytest(*ARGS, "-p", "no:setec")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'setec_db' not found*"])


def test_loading_the_plugin_is_cheap() -> None:
    """Loading the plugin loads no HTTP stack (werkzeug, cheroot, requests): a test run
    that uses no server fixture does not pay for one."""
    code = "import sys, setec_core.testing.pytest_plugin; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    for name in ("werkzeug", "cheroot", "requests", "setec_core.testing.server"):
        assert name not in loaded
