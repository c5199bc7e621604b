"""The pull-request comment of `greenbench check`: one row per verdict, failures first, the noise
against each rule's tolerance, names from records made inert, and under GitHub's 65,536
characters however many verdicts there are."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from greenbench import results
from greenbench.check import exports
from greenbench.check.budget import Rule, evaluate, load_budgets
from greenbench.check.comment import BUDGET, COMMENT_MARKER, GITHUB_LIMIT, comment, length
from greenbench.records import to_json
from tests.helpers import greenbench, record


def with_fit(content: dict, fit_j: float) -> dict:
    content["energy"]["windows"]["fit"] = {
        "total_j": fit_j, "duration_s": 11.0, "measured": False,
        "components": {"cpu": {"joules": fit_j, "source": "codecarbon_cpu_load_estimate"}}}
    return content


def records(precisions: dict[str, tuple[float, ...]], kid: float = 0.3) -> list[dict]:
    return [with_fit(record(f"{precision}-{i}", precision=precision, seed=i, kid=kid + i / 100),
                     joules)
            for precision, energies in precisions.items() for i, joules in enumerate(energies)]


def made(runs: list[dict], rules: str, tmp_path: Path, title: str = "t",
         warnings: tuple[str, ...] = ()) -> str:
    (tmp_path / "budgets.yaml").write_text(rules)
    frame = results.frame(runs)
    verdicts = evaluate(load_budgets(tmp_path / "budgets.yaml", list(frame.columns)), frame)
    return comment(exports.figures(verdicts, frame), title, warnings)


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


RULES = """\
- name: bf16-mixed fits on at most 90 % of 32-true's energy
  select: {precision: bf16-mixed}
  relative_to: {precision: 32-true}
  metric: energy_fit_j
  max_ratio: 0.9
  tolerance: 0.2
- name: KID at most 0.35
  metric: kid
  max: 0.35
"""


def test_one_row_per_verdict_failures_first(tmp_path: Path) -> None:
    runs = records({"32-true": (50.0, 52.0, 48.0), "bf16-mixed": (40.0, 41.0, 39.0)})
    runs[3]["quality"]["final"]["kid"] = 0.5  # bf16-mixed's KID: (0.5 + 0.31 + 0.32) / 3
    text = made(runs, RULES, tmp_path, title="greenbench check: budgets.yaml on s")
    assert text.startswith(f"{COMMENT_MARKER}\n### greenbench check: budgets.yaml on s\n\n"
                           "**2 pass, 1 fail**\n")
    rows = table_rows(text)
    assert [row[:3] for row in rows] == [
        ["**FAIL**", "KID at most 0.35", "precision=bf16-mixed"],
        ["PASS", "bf16-mixed fits on at most 90 % of 32-true's energy", "–"],
        ["PASS", "KID at most 0.35", "precision=32-true"]]
    kid, ratio = rows[0], rows[1]
    assert kid[3] == "0.3767 ± 0.27" and kid[4] == "–" and kid[5] == "kid ≤ 0.35"
    assert kid[7] == "28.4%"  # the coefficient of variation of its three KIDs
    assert ratio[3] == "40 ± 2.5 J" and ratio[4].startswith("0.8 (0.7")
    assert ratio[5] == "energy\\_fit\\_j ratio ≤ 1.08 (0.9 + 20%) vs precision=32-true"
    assert ratio[6] == "kid 0.3767 ± 0.27"  # the quality of the same runs, beside the energy
    assert "kid: lower is better" in text


def test_the_noise_says_when_a_tolerance_is_too_narrow_and_what_to_do(tmp_path: Path) -> None:
    runs = records({"32-true": (50.0, 52.0, 48.0), "bf16-mixed": (40.0, 41.0, 39.0)})
    text = made(runs, RULES, tmp_path)
    notes = text.split("**Noise against tolerance**", 1)[1].split("\n\n")[1].splitlines()
    assert notes[0].startswith("- bf16-mixed fits on at most 90 % of 32-true's energy: "
                               "tolerance 20.0% is at least 2 x the noise of its "
                               "configurations (at most 4.0%)")
    assert notes[1].startswith("- KID at most 0.35: tolerance 0.0% is below 2 x the noise of "
                               "its configurations (up to 3.2%)")
    assert "run `greenbench calibrate`" in notes[1] and "calibrate" not in notes[0]
    single = made(records({"32-true": (50.0,), "bf16-mixed": (40.0,)}), RULES, tmp_path)
    assert ("- KID at most 0.35: no configuration has repeats, so no noise was measured; run "
            "the sweep with `repeats: 2` or more, or run `greenbench calibrate`") in single
    assert all(row[7] == "–" for row in table_rows(single))
    assert table_rows(single)[0][3] == "40 J (1 run)"


def test_names_from_the_budgets_and_records_are_inert(tmp_path: Path) -> None:
    runs = records({"32-true": (50.0, 52.0), "@octocat https://evil.example/x": (40.0, 41.0)})
    rules = ("- name: 'ping @maintainers | <b>see</b> https://evil.example'\n"
             "  metric: energy_fit_j\n  max: 45\n")
    text = made(runs, rules, tmp_path, warnings=("rule 'x': cc @octocat",))
    assert "@octocat" not in text and "@maintainers" not in text
    assert "@\u200boctocat" in text and "@\u200bmaintainers" in text
    assert "<b>" not in text and "&lt;b&gt;" in text
    assert "`https://evil.example`" in text and "`https://evil.example/x`" in text
    assert all(len(row) == 8 for row in table_rows(text))  # the pipe did not add a column


def test_thousands_of_verdicts_stay_under_githubs_limit(tmp_path: Path) -> None:
    # 1,000 configurations (widths) x 5 rules, 2 runs each: 5,000 verdicts; the widest 50 fail
    widths = [1.0 + i for i in range(1000)]
    frame = pd.DataFrame([{"run_id": f"{w}-{i}", "status": "ok", "model": "gan",
                           "precision": "32-true", "width": w, "energy_fit_j": w + i}
                          for w in widths for i in range(2)])
    long = "a rule with a name long enough to fill a table cell of the comment, number"
    rules = [Rule(name=f"{long} {k}", metric="energy_fit_j", max=950.5 + (k > 0) * 1e4)
             for k in range(5)]
    entries = exports.figures(evaluate(rules, frame), frame)
    assert len(entries) == 5000
    text = comment(entries, "greenbench check: budgets.yaml on big (2000 records)")
    assert length(text) <= BUDGET < GITHUB_LIMIT
    rows = table_rows(text)
    assert [row[0] for row in rows] == ["**FAIL**"] * 50 + ["PASS"]
    assert rows[-1][1] == ("_4950 passing verdicts are not listed, to keep this comment under "
                           "GitHub's 65,536 characters_")
    assert "**4950 pass, 50 fail**" in text

    failing = [Rule(name=f"{long} {k}", metric="energy_fit_j", max=0.5) for k in range(5)]
    text = comment(exports.figures(evaluate(failing, frame), frame), "all fail")
    assert length(text) <= BUDGET
    rows = table_rows(text)
    last = rows[-1][1]
    assert re.fullmatch(r"_(\d+) more verdicts not listed_", last), last
    assert len(rows) - 1 + int(re.findall(r"\d+", last)[0]) == 5000
    assert all(row[0] == "**FAIL**" for row in rows[:-1])


def test_length_is_counted_as_github_counts() -> None:
    assert length("J") == 1 and length("±") == 1 and length("\U0001f600") == 2


def test_the_command_writes_the_comment(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "s" / "records"
    folder.mkdir(parents=True)
    for content in records({"32-true": (50.0, 52.0, 48.0), "bf16-mixed": (40.0, 41.0, 39.0)}):
        (folder / f"{content['run_id']}.json").write_text(to_json(content))
    (tmp_path / "budgets.yaml").write_text(RULES)
    done = greenbench("check", "budgets.yaml", "runs/s", "--comment", "comment.md", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "comment.md").read_text()
    assert "### greenbench check: budgets.yaml on s (6 records)" in text
    assert len(table_rows(text)) == 3 and "**3 pass**" in text


def test_the_example_in_the_docs_has_this_comments_shape() -> None:
    from greenbench.check.comment import HEADER

    docs = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    example = docs[docs.index(f"\n{COMMENT_MARKER}\n### ") + 1:]  # the comment, not the prose on it
    example = example[:example.index("</sub>")]
    lines = example.splitlines()
    header = next(line for line in lines if line.startswith("| result"))
    assert header == "| " + " | ".join(HEADER) + " |"
    rows = table_rows(example)
    assert len(rows) == 6 and all(len(row) == len(HEADER) for row in rows)
    assert [row[0] for row in rows] == ["**FAIL**"] * 2 + ["_INCONCLUSIVE_"] * 2 + ["PASS"] * 2
    assert "**2 pass, 2 fail, 2 inconclusive**" in example
