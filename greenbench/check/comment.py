"""A check's verdicts as a pull-request comment: GitHub-flavoured Markdown a reviewer reads.

One table row per verdict, failures first: the rule, its configuration, the value with its 95 %
interval, the ratio to the reference where the rule has one, the bound, the quality metric of
the same runs, and the noise the configuration showed (the coefficient of variation over its
repeats). Then, per rule, whether its tolerance is at least twice that noise (what
``greenbench calibrate`` asks of a tolerance); where it is not, or where there were no repeats
to measure noise with, the comment says to run ``greenbench calibrate``.

GitHub refuses a comment over 65,536 characters: beyond ``BUDGET``, the passing rows are
summarised in one line, and if even that is too long, the remaining rows and notes are cut,
saying how many. Every name that comes from the budgets file or the records is made inert as
the report makes its own (``report.render.markdown_cell``): it can neither break the table nor
mention anyone nor link anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from greenbench import __version__
from greenbench.check.budget import FAIL, INCONCLUSIVE, PASS
from greenbench.check.calibration import DETECTABLE
from greenbench.check.exports import Figures, configuration_text, fields_text, fmt
from greenbench.check.verdicts import printable, summary_line
from greenbench.report.render import markdown_cell

GITHUB_LIMIT = 65_536  # characters in a comment's body
BUDGET = 65_000  # this comment's most, in UTF-16 code units: room for a line a workflow adds
COMMENT_MARKER = "<!-- greenbench-check -->"  # finds this comment among a pull request's
HEADER = ("result", "rule", "configuration", "value (95 % CI)", "ratio (95 % CI)", "bound",
          "quality", "noise (CV)")
ALIGN = ("---", "---", "---", "---:", "---:", "---", "---", "---:")
VERDICT_ORDER = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2}
SHOWN = {PASS: "PASS", FAIL: "**FAIL**", INCONCLUSIVE: "_INCONCLUSIVE_"}


def length(text: str) -> int:
    """How long GitHub counts ``text``: UTF-16 code units (a character beyond U+FFFF is two)."""
    return len(text.encode("utf-16-le")) // 2


def cell(text: str) -> str:
    return markdown_cell(printable(text)) or "–"


def comment(entries: Sequence[Figures], title: str, warnings: Sequence[str] = ()) -> str:
    """The comment for these verdicts' figures; under ``BUDGET`` whatever their number."""
    ordered = sorted(entries, key=lambda entry: VERDICT_ORDER[entry.verdict.result])
    verdicts = [entry.verdict for entry in entries]
    head = [COMMENT_MARKER, f"### {cell(title)}", "", f"**{summary_line(verdicts)}**", ""]
    table = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join(ALIGN) + " |"]
    rows = [_row(entry) for entry in ordered]
    passing = sum(entry.verdict.result == PASS for entry in entries)
    notes = noise_notes(entries)
    warned = [f"- {cell(warning)}" for warning in warnings]
    foot = ["", _qualities(entries), "", f"<sub>greenbench {__version__}: `greenbench check`; "
            "how each verdict was decided is in the job summary and the JUnit report.</sub>", ""]

    def assemble(rows: list[str], notes: list[str], warned: list[str]) -> str:
        parts = [*head, *table, *rows]
        if notes:
            parts += ["", "**Noise against tolerance**", "", *notes]
        if warned:
            parts += ["", "**Warnings**", "", *warned]
        return "\n".join(parts + foot)

    text = assemble(rows, notes, warned)
    if length(text) <= BUDGET:
        return text
    kept = rows[:len(rows) - passing]
    summary = _line(SHOWN[PASS], f"_{passing} passing verdicts are not listed, to keep this "
                    f"comment under GitHub's {GITHUB_LIMIT:,} characters_")
    room = BUDGET - length(assemble([], [], [])) - 2 * length(summary)
    notes_room = min(sum(map(length, notes)), room // 4)
    warned_room = min(sum(map(length, warned)), room // 8)
    kept = _fit(kept, room - notes_room - warned_room, _line("", "_{} more verdicts not listed_"))
    used = sum(length(line) + 1 for line in kept)
    notes = _fit(notes, room - used - warned_room, "- _{} more rules not listed_")
    used += sum(length(line) + 1 for line in notes)
    warned = _fit(warned, room - used, "- _{} more warnings not listed_")
    return assemble(kept + ([summary] if passing else []), notes, warned)


def _fit(lines: list[str], room: int, more: str) -> list[str]:
    """As many of ``lines`` as fit in ``room`` (each with its line break), then a line saying
    how many were left out."""
    if sum(length(line) + 1 for line in lines) <= room:
        return lines
    reserve = length(more.format(len(lines))) + 1
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + length(line) + 1 > room - reserve:
            break
        kept.append(line)
        used += length(line) + 1
    return [*kept, more.format(len(lines) - len(kept))]


def _line(first: str, second: str) -> str:
    """A table row that only says something, in its first two cells."""
    return "| " + " | ".join([first, second, *[""] * (len(HEADER) - 2)]) + " |"


def _row(entry: Figures) -> str:
    verdict = entry.verdict
    rule = verdict.rule
    cells = [SHOWN[verdict.result], cell(rule.name), cell(configuration_text(verdict)),
             cell(_value(entry)), cell(_ratio(entry)), cell(_bound(entry)),
             cell(_quality(entry)), cell(f"{entry.cv:.1%}" if math.isfinite(entry.cv) else "")]
    return "| " + " | ".join(cells) + " |"


def _unit(entry: Figures) -> str:
    """`` J`` after a number; nothing where the metric is its own unit (quality)."""
    return "" if entry.unit == entry.verdict.rule.metric else f" {entry.unit}"


def _value(entry: Figures) -> str:
    """The configuration's mean with its interval; for a bound on an end of the interval, that
    end first."""
    rule = entry.verdict.rule
    n = entry.verdict.n
    if not math.isfinite(entry.half):
        return f"{fmt(entry.mean, 4)}{_unit(entry)} ({n} run{'s' if n != 1 else ''})"
    mean = f"{fmt(entry.mean, 4)} ± {fmt(entry.half, 2)}{_unit(entry)}"
    if rule.is_ratio or rule.statistic == "mean":
        return mean
    end = "upper" if rule.statistic == "upper_ci" else "lower"
    return f"{fmt(entry.value, 4)}{_unit(entry)} ({end} end of {mean})"


def _ratio(entry: Figures) -> str:
    if not entry.verdict.rule.is_ratio:
        return ""
    interval = f" ({fmt(entry.low, 3)}–{fmt(entry.high, 3)})" if entry.has_interval else ""
    return f"{fmt(entry.value, 3)}{interval}"


def _bound(entry: Figures) -> str:
    rule = entry.verdict.rule
    sign = "≤" if rule.bound_kind.startswith("max") else "≥"
    widened = (f" ({fmt(rule.bound, 4)} + {rule.tolerance:.0%})" if rule.tolerance else "")
    if rule.is_ratio:
        reference = ("--baseline" if rule.relative_to is None else
                     fields_text(rule.relative_to.given()))
        return f"{rule.metric} ratio {sign} {fmt(entry.verdict.bound, 4)}{widened} vs {reference}"
    what = {"mean": "", "upper_ci": "upper 95 % of ", "lower_ci": "lower 95 % of "}
    return (f"{what[rule.statistic]}{rule.metric} {sign} {fmt(entry.verdict.bound, 4)}"
            f"{_unit(entry)}{widened}")


def _quality(entry: Figures) -> str:
    quality = entry.quality
    if quality is None:
        return ""
    spread = f" ± {fmt(quality.half, 2)}" if math.isfinite(quality.half) else ""
    return f"{quality.metric} {fmt(quality.mean, 4)}{spread}"


def _qualities(entries: Sequence[Figures]) -> str:
    """What the quality column holds, and which way each metric in it is better."""
    ways = {True: "higher is better", False: "lower is better", None: "no direction known"}
    metrics = dict.fromkeys((entry.quality.metric, entry.quality.higher_is_better)
                            for entry in entries if entry.quality is not None)
    if not metrics:
        return "_quality: none of these runs has a quality score._"
    said = "; ".join(f"{cell(metric)}: {ways[higher]}" for metric, higher in metrics)
    return (f"_value: the mean of the configuration's runs and the 95 % interval; quality: the "
            f"same runs' quality metric ({said}); noise: the coefficient of variation over "
            f"repeats (for a ratio, the larger of the two sides')._")


def noise_notes(entries: Sequence[Figures]) -> list[str]:
    """Per rule, whether its tolerance is at least ``DETECTABLE`` times the largest noise its
    configurations showed; where not, or where no configuration had repeats, what to do."""
    by_rule: dict[str, list[Figures]] = {}
    for entry in entries:
        by_rule.setdefault(entry.verdict.rule.name, []).append(entry)
    lines = []
    for name, mine in by_rule.items():
        rule = mine[0].verdict.rule
        spreads = [entry.cv for entry in mine if math.isfinite(entry.cv)]
        who = f"- {cell(name)}:"
        if not spreads:
            lines.append(f"{who} no configuration has repeats, so no noise was measured; run "
                         "the sweep with `repeats: 2` or more, or run `greenbench calibrate`")
            continue
        worst = max(spreads)
        if rule.tolerance >= DETECTABLE * worst:
            lines.append(f"{who} tolerance {rule.tolerance:.1%} is at least {DETECTABLE:g} x the "
                         f"noise of its configurations (at most {worst:.1%})")
        else:
            lines.append(f"{who} tolerance {rule.tolerance:.1%} is below {DETECTABLE:g} x the "
                         f"noise of its configurations (up to {worst:.1%}): a change that small "
                         "cannot be told from noise; run `greenbench calibrate` and set a "
                         "tolerance above twice what it measures")
    return lines
