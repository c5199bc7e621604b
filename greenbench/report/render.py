"""The report as text: GitHub-flavoured Markdown for pull requests, one self-contained HTML page.

Both renderers take a ``ReportContent`` built by the caller and treat every string in it as
untrusted (sweep descriptions, labels and notes come from users' files): in Markdown it is escaped
so it can neither break a table nor inject HTML, nor notify anyone or link anywhere when pasted
into a pull request (an ``@name`` mention gets a zero-width space after its ``@``; a bare URL
becomes inline code); in HTML every string goes through ``html.escape``. The HTML page has no
JavaScript and references nothing outside itself: its CSS is inline and its plots are embedded
as base64 PNGs; a Content-Security-Policy says so to the browser as well.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from greenbench.records import DIVERGED, FAILED

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROBLEM_STATUSES = frozenset({FAILED, DIVERGED})

# A cell that is a number, optionally with a ± interval and a unit ("1.2e3", "140 ± 12 J", "8 %").
_NUMBER = r"[-+−]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+−]?\d+)?"
_UNIT = r"(?:%|[a-zA-Zµ]+(?:/[a-zA-Z0-9]+)?)"
_NUMERIC_CELL = re.compile(rf"^[~≈<>]?\s*{_NUMBER}(?:\s*(?:±|\+/-)\s*{_NUMBER})?(?:\s*{_UNIT})?$")
_BLANK_CELLS = frozenset({"", "-", "—", "–", "n/a", "nan", "NaN"})
_NEWLINE = re.compile(r"\r\n?|\n")
_MD_INLINE = re.compile(r"([\\`*_\[\]|~])")  # inline Markdown syntax, escaped with a backslash
_MD_BLOCK_START = re.compile(r"^([#+-]|\d+[.)](?=\s|$))")  # would start a heading or a list
# A mention (@user, @org/team) and anything GitHub would turn into a link (extended autolinks).
MENTION_BREAK = "\u200b"  # zero-width space: "@\u200bname" reads as "@name" and notifies nobody
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_URL = re.compile(r"((?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>`|\\\"']+)", re.IGNORECASE)
_URL_TRAILING = ".,:;!?*_~'"  # punctuation after a URL, not part of it (as GitHub reads it)


@dataclass
class ReportContent:
    """Everything the report shows, already computed and formatted by the caller."""

    title: str  # e.g. "greenbench report: quickstart"
    sweeps: list[tuple[str, str]]  # (sweep name, description): untrusted text
    status_counts: dict[str, int]  # e.g. {"ok": 7, "skipped": 1}
    tables: list[tuple[str, str, pd.DataFrame]]  # (heading, note under it, formatted table)
    notes: list[str]  # provenance and warnings, one line each (untrusted)
    plots: list[tuple[str, Path]]  # (caption, PNG path); an SVG with the same stem beside each
    generated: str  # e.g. "2026-11-22 13:30 UTC, greenbench 0.1.0, commit abc123"


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(content: ReportContent, out_dir: Path) -> str:
    """The report as GitHub-flavoured Markdown, for a file in ``out_dir`` (image links are
    relative to it)."""
    lines = [f"# {_md(content.title, newline=' ')}", "", f"_Generated {_md(content.generated)}_"]
    if content.sweeps:
        lines += ["", "## Sweeps", ""]
        for name, description in content.sweeps:
            text = f"**{_md(name)}**"
            lines.append(f"- {text}: {_md(description)}" if description.strip() else f"- {text}")
    if content.status_counts:
        lines += ["", "## Runs", "", _md(_status_line(content.status_counts))]
    for heading, note, table in content.tables:
        lines += ["", f"## {_md(heading, newline=' ')}", ""]
        if note.strip():
            lines += [_md(note), ""]
        lines += _md_table(table)
    if content.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {_md(note)}" for note in content.notes]
    if content.plots:
        lines += ["", "## Plots"]
        for caption, png in content.plots:
            svg = Path(png).with_suffix(".svg")
            lines += ["", f"![{_md(caption, newline=' ')}]({_link(png, out_dir)})", ""]
            lines.append(f"{_md(caption)} ([SVG]({_link(svg, out_dir)}))")
    return "\n".join(lines) + "\n"


def _md_table(table: pd.DataFrame) -> list[str]:
    """A pipe table: one header row, an alignment row (numbers right-aligned), the cells."""
    if len(table.columns) == 0:
        return ["_(no columns)_"]
    numeric = _numeric_columns(table)
    rows = [[_md(column, newline=" ", line_start=False) for column in table.columns]]
    rows.append(["---:" if right else "---" for right in numeric])
    rows += [[_md(cell, line_start=False) for cell in row]
             for row in table.itertuples(index=False, name=None)]
    # Cells are padded with spaces, so a cell ending in an escaped backslash never touches a pipe.
    return ["| " + " | ".join(row) + " |" for row in rows]


def _md(text: Any, newline: str = "<br>", line_start: bool = True) -> str:
    """Untrusted text made inert in Markdown: HTML-significant characters as entities, inline
    syntax (and the pipe) backslash-escaped, ``@`` mentions broken, bare URLs as inline code,
    line breaks replaced by ``newline`` and, for text that starts a line (``line_start``; a table
    cell does not), a leading heading or list marker escaped."""
    parts = _URL.split(_text(text).strip())  # even: text; odd: a URL
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            url = _url_end(part)
            out += [f"`{url}`", _md_plain(part[len(url):], newline)]
        else:
            out.append(_md_plain(part, newline))
    result = "".join(out)
    return _MD_BLOCK_START.sub(r"\\\1", result) if line_start else result


def markdown_cell(text: Any) -> str:
    """Untrusted text made inert as one table cell or inline phrase of Markdown, as the report
    treats its own (``_md``): for other Markdown that names from records reach, such as the
    pull-request comment of ``greenbench check``."""
    return _md(text, newline=" ", line_start=False)


def _url_end(url: str) -> str:
    """``url`` without trailing punctuation; a closing parenthesis stays when it is balanced."""
    while url and (url[-1] in _URL_TRAILING
                   or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url


def _md_plain(text: str, newline: str) -> str:
    text = _MENTION.sub("@" + MENTION_BREAK, escape(text, quote=False))
    return _NEWLINE.sub(newline, _MD_INLINE.sub(r"\\\1", text))


def _link(path: Path, out_dir: Path) -> str:
    """``path`` as a URL relative to ``out_dir``, percent-encoded for a Markdown link."""
    try:
        relative = os.path.relpath(path, out_dir)
    except ValueError:  # another drive on Windows: no relative path exists
        relative = os.path.abspath(path)
    return quote(Path(relative).as_posix())


def _status_line(counts: dict[str, int]) -> str:
    parts = ", ".join(f"{count} {status}" for status, count in counts.items())
    total = sum(counts.values())
    return f"{total} run{'s' if total != 1 else ''}: {parts}"


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.75em; margin: 0 0 0.2em; }
h2 { font-size: 1.25em; margin: 1.8em 0 0.6em; padding-bottom: 0.25em;
  border-bottom: 1px solid #d0d7de; }
.generated, .note, figcaption { color: #59636e; }
.generated { margin-top: 0; }
dt { font-weight: 600; }
dd { margin: 0 0 0.6em 1.5em; white-space: pre-line; }
.counts { display: flex; flex-wrap: wrap; gap: 8px; padding: 0; list-style: none; }
.counts li { padding: 2px 10px; border: 1px solid #d0d7de; border-radius: 12px;
  background: #f6f8fa; }
.counts li.problem { border-color: #cf222e; background: #ffebe9; }
.table-wrap { overflow: auto; max-height: 80vh; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 6px 10px; text-align: left; vertical-align: top; white-space: pre-line;
  border-bottom: 1px solid #eaeef2; }
th { position: sticky; top: 0; background: #eef1f4; font-weight: 600;
  border-bottom: 1px solid #d0d7de; }
tbody tr:nth-child(even) { background: #f6f8fa; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.notes li { margin: 0.2em 0; white-space: pre-line; }
figure { margin: 1.5em 0 2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { margin-top: 0.4em; }
@media print { .table-wrap { max-height: none; overflow: visible; } th { position: static; } }
"""

# No scripts, no remote anything: only inline styles and embedded (data:) images.
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'")


def html(content: ReportContent) -> str:
    """The report as one self-contained HTML5 page: inline CSS, embedded plots, no JavaScript."""
    body = [f"<h1>{_h(content.title)}</h1>",
            f'<p class="generated">Generated {_h(content.generated)}</p>']
    if content.sweeps:
        body += ["<section>", "<h2>Sweeps</h2>", "<dl>"]
        for name, description in content.sweeps:
            body.append(f"<dt>{_h(name)}</dt>")
            if description.strip():
                body.append(f"<dd>{_h(description.strip())}</dd>")
        body += ["</dl>", "</section>"]
    if content.status_counts:
        body += ["<section>", "<h2>Runs</h2>", '<ul class="counts">']
        total = sum(content.status_counts.values())
        body.append(f"<li><strong>{total}</strong> in all</li>")
        for status, count in content.status_counts.items():
            problem = ' class="problem"' if status in PROBLEM_STATUSES and count else ""
            body.append(f"<li{problem}><strong>{_h(count)}</strong> {_h(status)}</li>")
        body += ["</ul>", "</section>"]
    for heading, note, table in content.tables:
        body += ["<section>", f"<h2>{_h(heading)}</h2>"]
        if note.strip():
            body.append(f'<p class="note">{_h(note.strip())}</p>')
        body += _html_table(table)
        body.append("</section>")
    if content.notes:
        body += ["<section>", "<h2>Notes</h2>", '<ul class="notes">']
        body += [f"<li>{_h(note)}</li>" for note in content.notes]
        body += ["</ul>", "</section>"]
    if content.plots:
        body += ["<section>", "<h2>Plots</h2>"]
        for caption, png in content.plots:
            body += _html_figure(caption, Path(png))
        body.append("</section>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(content.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        "</main>",
        "</body>",
        "</html>",
    ]) + "\n"


def _html_table(table: pd.DataFrame) -> list[str]:
    if len(table.columns) == 0:
        return ['<p class="note">(no columns)</p>']
    classes = [' class="num"' if right else "" for right in _numeric_columns(table)]
    header = "".join(f'<th scope="col"{cls}>{_h(column)}</th>'
                     for cls, column in zip(classes, table.columns, strict=True))
    lines = ['<div class="table-wrap">', "<table>", f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    for row in table.itertuples(index=False, name=None):
        cells = "".join(f"<td{cls}>{_h(cell)}</td>" for cls, cell in zip(classes, row, strict=True))
        lines.append(f"<tr>{cells}</tr>")
    lines += ["</tbody>", "</table>", "</div>"]
    return lines


def _html_figure(caption: str, png: Path) -> list[str]:
    """A plot as a ``<figure>`` whose image is the PNG itself, base64-encoded."""
    data = png.read_bytes()
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError(f"{png}: not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    source = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return [
        "<figure>",
        f'<img src="{source}" alt="{_h(caption)}" width="{width}" height="{height}">',
        f"<figcaption>{_h(caption)}</figcaption>",
        "</figure>",
    ]


def _h(value: Any) -> str:
    """Any value as escaped HTML text (quotes too, so it is safe in attributes)."""
    return escape(_text(value), quote=True)


# ---------------------------------------------------------------------------------------------
# Shared


def _text(value: Any) -> str:
    """A cell as text: '' for None and NaN."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value)


def _numeric_columns(table: pd.DataFrame) -> list[bool]:
    """Per column, whether it holds numbers (to right-align): every cell that is not blank or a
    placeholder is a number, possibly with an interval and a unit, and at least one is."""
    result = []
    for _, column in table.items():
        cells = [_text(cell).strip() for cell in column]
        values = [cell for cell in cells if cell not in _BLANK_CELLS]
        result.append(bool(values) and all(_NUMERIC_CELL.match(cell) for cell in values))
    return result
