"""The read-only HTML dashboard at ``GET /`` (docs/api.md §1.4).

It shows the caller the secrets it may ``info``: each name, HTML-escaped, and its
versions in ascending order with the active one in bold. It never shows a value. The
page has no script and loads only its own stylesheet, which the Content-Security-Policy
set by the app enforces.
"""

from __future__ import annotations

from html import escape

from setec_core.model import SecretInfo

STYLE_CSS = b"""\
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
td.name { font-family: ui-monospace, monospace; word-break: break-all; }
p.who, p.empty { color: #666; }
"""

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Setec Secrets Service</title>
<link rel="stylesheet" href="static/style.css">
</head>
<body>
<h1>Secrets List</h1>
<p class="who">Signed in as {who}.</p>
<table id="secrets">
<thead><tr><th>Name</th><th>Versions</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
{empty}</body>
</html>
"""


def versions_html(info: SecretInfo) -> str:
    """Return the versions of ``info`` ascending, joined by ``", "``, with the active
    one wrapped in ``<b>`` (Go's rendering: ``1, <b>2</b>, 3``)."""
    return ", ".join(
        f"<b>{v}</b>" if v == info.active_version else str(v) for v in sorted(info.versions)
    )


def render(infos: list[SecretInfo], who: str) -> bytes:
    """Return the dashboard page for the secrets ``infos`` seen by the caller ``who``."""
    rows = "".join(
        f'<tr><td class="name">{escape(info.name)}</td><td>{versions_html(info)}</td></tr>\n'
        for info in infos
    )
    empty = "" if infos else '<p class="empty">No secrets are visible to you.</p>\n'
    return _PAGE.format(who=escape(who), rows=rows, empty=empty).encode()
