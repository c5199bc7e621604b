"""The report's plots and renderers: real figures, real files, and a real browser for the HTML."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from greenbench.report import plots, render
from greenbench.report.render import ReportContent

HOSTILE = "<script>alert(1)</script>"
WINDOW = (1280, 2400)  # the browser window, width x height


# ---------------------------------------------------------------------------------------------
# Hand-made inputs: 2 models x 3 configurations, a Pareto front, one configuration estimated.


def _summary(measured: bool = True) -> pd.DataFrame:
    rows = [
        # model, label, energy mean, energy CI, KID mean, KID CI, pareto
        ("gan", "gan 32-true w1.0", 400.0, 30.0, 0.020, 0.004, True),
        ("gan", "gan bf16-mixed w1.0", 250.0, 20.0, 0.030, 0.006, True),
        ("gan", "gan 32-true w0.5", 300.0, math.nan, 0.045, math.nan, False),
        ("vae", "vae 32-true w1.0", 1200.0, 90.0, 0.50, 0.05, True),
        ("vae", "vae $\\frac{ w0.5", 60.0, 5.0, 0.80, 0.07, True),  # not mathtext: drawn as is
        ("vae", "vae bf16-mixed w1.0", 900.0, 80.0, 0.90, 0.10, False),
    ]
    frame = pd.DataFrame(rows, columns=["model", "label", "energy_train_j_mean",
                                        "energy_train_j_ci", "kid_mean", "kid_ci", "pareto"])
    frame["dataset"] = "digits"
    frame["n"] = 3
    frame["measured"] = measured
    if not measured:
        frame.loc[1:, "measured"] = True  # only the first configuration is estimated
    return frame


def _results() -> pd.DataFrame:
    rows = []
    for label, scale in (("gan 32-true w1.0", 1.0), ("gan 32-true w0.5", 0.5),
                         ("vae 32-true w1.0", 2.0)):
        for seed in range(2):
            row = {"run_id": f"{label}-{seed}", "label": label, "energy_measured": False}
            for window, joules in (("warmup", 5.0), ("train", 100.0), ("eval", 15.0)):
                row[f"energy_{window}_gpu_j"] = math.nan  # no GPU: never drawn as 0 J
                row[f"energy_{window}_cpu_j"] = joules * scale * (1 + 0.1 * seed)
                row[f"energy_{window}_ram_j"] = joules * scale * 0.4
            rows.append(row)
    return pd.DataFrame(rows)


def _curves() -> tuple[pd.DataFrame, dict[str, str]]:
    rows, labels = [], {}
    for config, label in enumerate(("gan 32-true w1.0", "gan 32-true w0.5", "vae 32-true w1.0")):
        for seed in range(2):
            run_id = f"run{config}{seed}"
            labels[run_id] = label
            for epoch in range(1, 5):
                rows.append({"run_id": run_id, "epoch": epoch, "step": 20 * epoch,
                             "fit_j": 30.0 * epoch * (config + 1),
                             "kid": 0.4 / epoch + 0.02 * seed,
                             "fid": math.nan, "nll_nats": math.nan})
    rows.append({"run_id": "single", "epoch": 5, "step": 100, "fit_j": 90.0, "kid": 0.1,
                 "fid": math.nan, "nll_nats": math.nan})  # one point only: still drawn
    labels["single"] = "_one point"  # a leading underscore must still reach the legend
    return pd.DataFrame(rows), labels


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    """The three plots, drawn once into a folder with a space in its name."""
    folder = tmp_path_factory.mktemp("report") / "plot files"
    curves, labels = _curves()
    paths = [
        ("KID against training energy", plots.quality_vs_energy(_summary(measured=False), folder)),
        ("Energy by window & component", plots.energy_breakdown(_results(), folder)),
        ("KID along training", plots.quality_curves(curves, labels, folder, estimated=True)),
    ]
    assert all(path is not None for _, path in paths)
    return [(caption, path) for caption, path in paths if path is not None]


def _content(figures: list[tuple[str, Path]]) -> ReportContent:
    table = pd.DataFrame({
        "configuration": ["a|b", "<b>x</b>", "two\nlines & more"],
        "energy (J)": ["1.2e3 ± 40", "980", "-"],
        "<i>KID</i>": ["0.021", "0.030", "0.045"],
    })
    return ReportContent(
        title="greenbench report: <quickstart>",
        sweeps=[("quickstart", HOSTILE), ("other", "")],
        status_counts={"ok": 7, "skipped": 1},
        tables=[("Energy | cost", "note with *stars* & <tags>", table)],
        notes=["Energy is ESTIMATED, not measured", "# not a heading", HOSTILE],
        plots=[('caption with "quotes" onerror="alert(1)', figures[0][1]), *figures[1:]],
        generated="2026-11-22 13:30 UTC, greenbench 0.1.0, commit abc123",
    )


# ---------------------------------------------------------------------------------------------
# Plots


def _assert_drawn(png: Path) -> None:
    svg = png.with_suffix(".svg")
    assert png.stat().st_size > 0 and svg.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    pixels = matplotlib.image.imread(png)
    assert pixels.std() > 0.02, "the PNG is blank"


def test_plots_write_non_blank_png_and_svg(figures: list[tuple[str, Path]]) -> None:
    for _, png in figures:
        _assert_drawn(png)
    names = sorted(path.name for path in figures[0][1].parent.iterdir())
    stems = ("quality_vs_energy", "energy_breakdown", "quality_curves")
    assert names == sorted(f"{stem}.{ext}" for stem in stems for ext in ("png", "svg"))


def test_figures_carry_units_labels_and_the_estimate_note(
    figures: list[tuple[str, Path]], tmp_path: Path
) -> None:
    kid_svg, breakdown_svg, curves_svg = (png.with_suffix(".svg").read_text() for _, png in figures)
    for svg in (kid_svg, breakdown_svg, curves_svg):
        assert plots.ESTIMATED_NOTE in svg
    # 60 J to 1200 J spans over 10x; these summaries have no fit window, and the axis says so
    assert "training energy (J), train window only, log scale" in kid_svg
    assert "KID, mean (lower is better)" in kid_svg
    assert "Pareto front" in kid_svg and "gan bf16-mixed w1.0" in kid_svg
    assert "vae $\\frac{ w0.5" in kid_svg  # a label with mathtext syntax is drawn literally
    assert "energy (J)" in breakdown_svg and "GPU" not in breakdown_svg  # no GPU values at all
    assert "cumulative training energy (J" in curves_svg and "_one point" in curves_svg
    assert curves_svg.count("gan 32-true w0.5") == 1  # one legend entry per label, not per run

    measured = plots.quality_vs_energy(_summary(measured=True), tmp_path)
    assert measured is not None
    assert plots.ESTIMATED_NOTE not in measured.with_suffix(".svg").read_text()


def test_plots_return_none_when_there_is_nothing_to_plot(tmp_path: Path) -> None:
    empty_summary = _summary().iloc[0:0]
    no_kid = _summary().assign(kid_mean=math.nan)
    assert plots.quality_vs_energy(empty_summary, tmp_path) is None
    assert plots.quality_vs_energy(no_kid, tmp_path) is None
    assert plots.energy_breakdown(_results().iloc[0:0], tmp_path) is None
    energy_columns = [c for c in _results() if c.startswith("energy_") and c.endswith("_j")]
    assert plots.energy_breakdown(_results().assign(**dict.fromkeys(energy_columns, None)),
                                  tmp_path) is None
    curves, labels = _curves()
    assert plots.quality_curves(curves.iloc[0:0], labels, tmp_path) is None
    assert plots.quality_curves(curves.assign(kid=math.nan), labels, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_single_point_per_run_is_still_a_curve(tmp_path: Path) -> None:
    curves, labels = _curves()
    last = curves.groupby("run_id").tail(1)
    png = plots.quality_curves(last, labels, tmp_path)
    assert png is not None
    _assert_drawn(png)


# ---------------------------------------------------------------------------------------------
# Markdown


def _cells(line: str) -> list[str]:
    """A pipe-table row split on its unescaped pipes (a backslash escapes the next character)."""
    assert line.startswith("| ") and line.endswith(" |")
    cells, current, chars = [], "", iter(line[1:-1])
    for char in chars:
        if char == "\\":
            current += char + next(chars, "")
        elif char == "|":
            cells.append(current)
            current = ""
        else:
            current += char
    return [*cells, current]


def test_markdown_tables_hold_their_shape_and_escape_html(
    figures: list[tuple[str, Path]]
) -> None:
    content = _content(figures)
    text = render.markdown(content, figures[0][1].parent.parent)

    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 3  # header, alignment, three cells rows
    assert all(len(_cells(row)) == 3 for row in rows)
    assert [cell.strip() for cell in _cells(rows[1])] == ["---", "---:", "---:"]
    assert _cells(rows[2])[0].strip() == r"a\|b"
    assert "&lt;b&gt;x&lt;/b&gt;" in rows[3] and "two<br>lines &amp; more" in rows[4]
    assert "&lt;i&gt;KID&lt;/i&gt;" in rows[0]
    assert "<b>" not in text and "<i>" not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "- \\# not a heading" in text
    assert "## Energy \\| cost" in text
    assert "7 ok, 1 skipped" in text


def test_markdown_links_plots_relative_to_the_report(figures: list[tuple[str, Path]]) -> None:
    out_dir = figures[0][1].parent.parent
    text = render.markdown(_content(figures), out_dir)

    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    svgs = re.findall(r"\[SVG\]\(([^)]+)\)", text)
    assert len(images) == len(svgs) == len(figures)
    for link in images + svgs:
        assert not link.startswith(("/", "file:")) and " " not in link
        assert link.startswith("plot%20files/")
        assert (out_dir / unquote(link)).is_file()
    assert [Path(unquote(link)).name for link in images] == [p.name for _, p in figures]


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_escapes_everything_and_embeds_every_plot(figures: list[tuple[str, Path]]) -> None:
    page = render.html(_content(figures))

    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>" not in page
    assert "<th scope=\"col\" class=\"num\">&lt;i&gt;KID&lt;/i&gt;</th>" in page
    assert "<title>greenbench report: &lt;quickstart&gt;</title>" in page
    assert '" onerror="' not in page and "&quot; onerror=&quot;" in page

    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(figures)
    for source, (_, png) in zip(sources, figures, strict=True):
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        data = base64.b64decode(source[len(prefix):], validate=True)
        assert data[:4] == b"\x89PNG" and data == png.read_bytes()
    assert re.findall(r'<img [^>]*alt="([^"]*)"', page)[1] == "Energy by window &amp; component"

    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(link|iframe|object|embed|base)\b", page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page and "@font-face" not in page


def test_html_right_aligns_numbers_only() -> None:
    table = pd.DataFrame({"configuration": ["32-true", "bf16-mixed"],
                          "energy (J)": ["140 ± 12", "1,234.5 J"],
                          "ratio": ["0.8 (0.7 to 0.9)", "-"]})
    content = ReportContent("t", [], {}, [("h", "", table)], [], [], "now")
    page = render.html(content)
    assert '<th scope="col">configuration</th>' in page
    assert '<th scope="col" class="num">energy (J)</th>' in page
    assert '<th scope="col">ratio</th>' in page


# ---------------------------------------------------------------------------------------------
# A real browser


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium installed")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_browser_renders_the_page_with_its_plots_and_no_script(
    figures: list[tuple[str, Path]], tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render.html(_content(figures)), encoding="utf-8")
    shot = tmp_path / "shot.png"

    _chromium(f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", page.as_uri(),
              profile=tmp_path / "profile-shot")

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    ink = pixels.min(axis=-1) < 0.9  # not white (nor the faint zebra stripes)
    assert ink.mean() > 0.02, "the page looks blank"
    colourful = pixels.max(axis=-1) - pixels.min(axis=-1) > 0.35  # the plots' colours, not text
    assert colourful.sum() > 5000, "no plot colours on the page: were the images rendered?"
    palette = {tuple(colour) for colour in np.round(pixels[colourful] * 4).astype(int)}
    assert len(palette) >= 6, f"only {len(palette)} distinct colours"

    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom").stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script" not in dom.lower()
    assert dom.count("<img ") == len(figures)


def test_markdown_mentions_notify_nobody_and_bare_urls_link_nowhere() -> None:
    table = pd.DataFrame({"configuration": ["@alice's run", "see https://evil.example/a_b?x=1&y=2"],
                          "energy (J)": ["1", "2"]})
    content = ReportContent(
        title="t", sweeps=[("s", "cc @octo-org/core, ask bob@example.com or www.example.com.")],
        status_counts={}, tables=[("h", "", table)],
        notes=["@channel: details at http://x.example/(path) and `ftp://y.example/z`|"],
        plots=[], generated="now")
    text = render.markdown(content, Path("."))

    assert not re.search(r"@[A-Za-z0-9]", text)  # every mention is broken...
    assert "@\u200balice's run" in text and "@\u200bocto-org/core" in text  # ...invisibly
    assert "bob@\u200bexample.com" in text and "@\u200bchannel" in text
    # URLs become inline code (verbatim inside: no entity or backslash escapes)...
    assert "see `https://evil.example/a_b?x=1&y=2`" in text
    assert "or `www.example.com`." in text  # trailing punctuation stays outside
    assert "`http://x.example/(path)`" in text
    # ...and nothing outside a code span still reads as a link.
    outside = re.sub(r"`[^`]*`", "", text.replace("\\`", ""))
    assert not re.search(r"https?://|www\.|ftp://", outside)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert all(len(_cells(row)) == 2 for row in rows)
    assert "@alice" in render.html(content)  # the HTML page notifies nobody: left as written
