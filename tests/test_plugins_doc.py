"""docs/plugins.md keeps step with the plugin API, in datasette's manner: every hookspec
is documented with its real signature, every hook the page names exists, every field of
the option API is explained, and the worked example of an authorizer with a flag works
through setec-serve."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from setec_core import ConfigError, Plugins, hookspecs
from setec_core.options import Option
from setec_core.server_info import ServerInfo

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TEXT = DOC.read_text()


def hookspec_signatures() -> dict[str, str]:
    """``name(params)`` of every hookspec in setec_core/hookspecs.py, by name."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, marker)
    }


def section(title: str) -> str:
    """The text of the page's ``## title`` section, up to the next ``## ``."""
    return TEXT.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_there_are_hookspecs() -> None:
    """The hookspecs are found (so the tests below check something)."""
    assert len(hookspec_signatures()) == 5


@pytest.mark.parametrize("name", sorted(hookspec_signatures()))
def test_every_hookspec_is_documented_with_its_signature(name: str) -> None:
    """Each hook has a heading, and a heading or a line starting with its signature in
    code: ``setec_register_key_providers(register)``, exactly."""
    signature = hookspec_signatures()[name]
    lines = TEXT.splitlines()
    assert f"### `{name}`" in lines, f"{name} has no heading in docs/plugins.md"
    assert any(
        (line.startswith("#") and f"`{signature}`" in line) or line.startswith(f"`{signature}`")
        for line in lines
    ), f"docs/plugins.md does not show {signature}"


def test_every_hook_the_page_names_exists() -> None:
    """A hook the page shows with arguments is a real hook, with those arguments."""
    shown = set(re.findall(r"`(setec_\w+\([^`]*\))`", TEXT))
    assert shown, "the page shows no hook signature"
    assert shown <= set(hookspec_signatures().values()), shown


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Option)])
def test_every_option_field_is_explained(field: str) -> None:
    """Each field of Option has a row in the page's table, and the constructor's
    signature there is the real one."""
    options = section("Plugin options")
    assert f"| `{field}` |" in options
    params = ", ".join(
        p.name
        if p.default is p.empty
        else f"{p.name}={getattr(p.default, '__name__', p.default)!s}"
        for p in inspect.signature(Option).parameters.values()
    )
    assert f"`Option({params})`" in options


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ServerInfo)])
def test_every_server_fact_is_explained(field: str) -> None:
    """Each field of ServerInfo is named where the page explains what an authorizer
    is told."""
    assert f"`{field}`" in section("Plugin options")


def example_module() -> types.ModuleType:
    """The page's example authorizer plugin, as the module a user would install."""
    code = re.findall(r"```python\n(.*?)```", section("Example: an authorizer with a flag"), re.S)
    module = types.ModuleType("setec_lab")
    exec(compile(code[0], "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


def test_the_example_authorizer_gets_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's --lab-header is in setec-serve --help with SETEC_LAB_HEADER; its
    value reaches the authorizer, which identifies by that header, and it refuses a
    listen address other hosts can reach."""
    from setec_cli.serve import cli
    from setec_core.peer import Peer

    lab = example_module()
    plugins = Plugins.load([lab])
    result = CliRunner().invoke(cli, ["--help"], obj=plugins)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--lab-header TEXT The header the proxy puts the caller's login in." in text
    assert "For --authorizer lab (plugin setec_lab)." in text
    assert "SETEC_LAB_HEADER" in text
    monkeypatch.setenv("SETEC_LAB_HEADER", "X-Forwarded-User")
    context = cli.make_context("setec-serve", ["--authorizer", "lab"], obj=plugins)
    authorizer = plugins.with_options(context.params).authorizer("lab")
    caller = authorizer.identify(Peer("127.0.0.1", 5000, headers={"X-Forwarded-User": "ann"}))
    assert caller.principal.user == "ann"
    assert caller.allows("get", "lab/db")
    with pytest.raises(ConfigError, match="reachable from other hosts"):
        plugins.authorizer("lab", server=ServerInfo("192.0.2.1", 80))
