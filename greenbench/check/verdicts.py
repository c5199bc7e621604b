"""How a check's verdicts are shown: a terminal table, Markdown for a CI job summary, JUnit XML.

Deciding lives in ``budget``; this module only prints what was decided.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from greenbench.check.budget import FAIL, INCONCLUSIVE, PASS, Verdict
from greenbench.check.rules import unprintable

HEADER = ("rule", "metric", "value", "bound", "margin", "result")


def printable(text: str) -> str:
    """``text`` with every character that must not reach a terminal or XML escaped as
    ``\\xNN``/``\\uNNNN``. Rule names are refused with such characters; a configuration's
    values come from records, which a hand edit may have spoiled."""
    while (char := unprintable(text)) is not None:
        code = ord(char)
        text = text.replace(char, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return text


def rows(verdicts: Sequence[Verdict]) -> list[tuple[str, ...]]:
    """One row per verdict: a rule, or a rule's configuration when it has several."""
    out = []
    for v in verdicts:
        kind = v.rule.bound_kind
        value = f"{v.value:.4g}" + (" (ratio)" if v.rule.is_ratio else "")
        bound = f"{'<=' if kind.startswith('max') else '>='} {v.bound:.4g}"
        margin = "-" if math.isnan(v.margin) else f"{v.margin:+.1%}"
        out.append((printable(v.label), v.rule.metric, value, bound, margin, v.result))
    return out


def terminal(verdicts: Sequence[Verdict], warnings: Sequence[str] = (),
             headline: str = "") -> str:
    """``headline`` (what was checked), a plain-text table with one line per verdict, then how
    each was decided."""
    table = [HEADER, *rows(verdicts)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if headline:
        lines[:0] = [printable(headline), ""]
    lines.append("")
    lines += [f"{v.result:<12} {printable(v.label)}: {v.note}" for v in verdicts]
    lines += [f"warning: {printable(warning)}" for warning in warnings]
    lines.append(summary_line(verdicts))
    return "\n".join(lines)


def summary_line(verdicts: Sequence[Verdict]) -> str:
    counts = {r: sum(v.result == r for v in verdicts) for r in (PASS, FAIL, INCONCLUSIVE)}
    return ", ".join(f"{n} {r.lower()}" for r, n in counts.items() if n) or "no rules"


def markdown(verdicts: Sequence[Verdict], title: str, warnings: Sequence[str] = ()) -> str:
    """The same table in GitHub-flavoured Markdown, for ``$GITHUB_STEP_SUMMARY``."""
    def cell(text: str) -> str:
        return printable(text.replace("|", "\\|").replace("\n", " "))

    icons = {PASS: "PASS", FAIL: "**FAIL**", INCONCLUSIVE: "_INCONCLUSIVE_"}
    lines = [f"### {cell(title)}", "", "| " + " | ".join(HEADER) + " |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row, verdict in zip(rows(verdicts), verdicts, strict=True):
        lines.append("| " + " | ".join([*map(cell, row[:-1]), icons[verdict.result]]) + " |")
    lines.append("")
    lines += [f"- {cell(v.label)}: {cell(v.note)}" for v in verdicts]
    lines += [f"- warning: {cell(w)}" for w in warnings]
    lines += ["", summary_line(verdicts), ""]
    return "\n".join(lines)


def junit(verdicts: Sequence[Verdict], strict: bool = False) -> str:
    """JUnit XML, one testcase per verdict (a rule, or each configuration of a rule that has
    several); INCONCLUSIVE is a failure only with ``strict``."""
    failing = {FAIL, INCONCLUSIVE} if strict else {FAIL}
    suite = ET.Element("testsuite", name="greenbench check", tests=str(len(verdicts)),
                       failures=str(sum(v.result in failing for v in verdicts)),
                       skipped="0", errors="0")
    for verdict, row in zip(verdicts, rows(verdicts), strict=True):
        case = ET.SubElement(suite, "testcase", classname="greenbench.budgets",
                             name=row[0])
        text = (f"{verdict.rule.metric}: {row[2]}, bound {row[3]}, margin {row[4]}; "
                f"{verdict.note}")
        if verdict.result in failing:
            ET.SubElement(case, "failure", message=f"{verdict.result}: {text}").text = text
        else:
            ET.SubElement(case, "system-out").text = f"{verdict.result}: {text}"
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
