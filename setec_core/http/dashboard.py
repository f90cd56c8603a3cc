"""The read-only HTML dashboard at ``GET /`` (docs/api.md §1.4).

It shows the caller the secrets it may ``info``: each name, HTML-escaped, its
versions in ascending order with the active one in bold, its description (escaped)
and when it was last accessed (docs/api.md §9.5). It never shows a value. The
page has no script and loads only its own stylesheet, which the Content-Security-Policy
set by the app enforces.
"""

from __future__ import annotations

from html import escape

from setec_core.model import SecretInfo
from setec_core.wire.gotime import format_time

STYLE_CSS = b"""\
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
td.name { font-family: ui-monospace, monospace; word-break: break-all; }
td.description { overflow-wrap: anywhere; }
td.last-access { white-space: nowrap; }
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
<thead><tr><th>Name</th><th>Versions</th><th>Description</th><th>Last access</th></tr></thead>
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


def last_access_html(info: SecretInfo) -> str:
    """Return when ``info`` was last accessed, to the second in UTC, in a ``<time>``
    element carrying the full time; ``""`` if never (or not recorded)."""
    when = info.last_access
    if when is None:
        return ""
    full = format_time(when)
    return f'<time datetime="{full}">{format_time(when.replace(microsecond=0))}</time>'


def render(infos: list[SecretInfo], who: str) -> bytes:
    """Return the dashboard page for the secrets ``infos`` seen by the caller ``who``."""
    rows = "".join(
        f'<tr><td class="name">{escape(info.name)}</td><td>{versions_html(info)}</td>'
        f'<td class="description">{escape(info.description)}</td>'
        f'<td class="last-access">{last_access_html(info)}</td></tr>\n'
        for info in infos
    )
    empty = "" if infos else '<p class="empty">No secrets are visible to you.</p>\n'
    return _PAGE.format(who=escape(who), rows=rows, empty=empty).encode()
