"""Files no one writes by hand: the limits that keep greenbench from reading, parsing, expanding
or listing without end. Each is refused through the real command with one line naming the file
(and the line or field), exit 2, no traceback, nothing written. Commands run under a generous
60 s guard against hangs, not as a speed target; before these limits, several ran past it
(minutes, gigabytes, or forever). Budget files are read by the same loader, so the same limits
hold for `check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenbench.errors import UserError
from greenbench.records import to_json
from greenbench.sweep.schema import MAX_POINTS, expand, load_sweep
from greenbench.yamlfile import MAX_ALIASED_NODES, MAX_BYTES, MAX_DEPTH
from tests.helpers import greenbench, record

GUARD_S = 60  # a hang guard, not a speed target


def laughs(levels: int, key: str = "description") -> str:
    """A billion-laughs file: each level an anchored list of nine aliases of the level below."""
    lines = ["name: x", "anchors:", '  a0: &a0 "lol"']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"{key}: *a{levels}", ""])


def merges(levels: int) -> str:
    """The same growth through '<<' merge keys, which copy the merged pairs when constructed."""
    lines = ["name: x", "anchors:", "  m0: &m0 {k0: 1, k1: 1}"]
    lines += [f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], z{i}: 1}}" for i in range(1, levels)]
    return "\n".join([*lines, ""])


def nested(depth: int, open_: str, close: str, inner: str = "1") -> str:
    return f"name: x\ndescription: {open_ * depth}{inner}{close * depth}\n"


def refused(tmp_path: Path, *args: str, file: str = "sweep.yaml") -> str:
    """Run the command; assert it refused the input the way bad input is refused, return the
    line it printed."""
    before = sorted(tmp_path.rglob("*"))
    done = greenbench(*args, cwd=tmp_path, timeout=GUARD_S)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"error: {file}: "), lines[0]
    assert done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    return lines[0]


def refused_sweep(tmp_path: Path, content: str | bytes) -> str:
    path = tmp_path / "sweep.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return refused(tmp_path, "run", "sweep.yaml", "--dry-run")


# --------------------------------------------------------------------------- aliases


def test_a_billion_laughs_is_refused_at_the_alias_that_goes_too_far(tmp_path: Path) -> None:
    # 10 levels: 9**10 values. Before, 8 levels took 24 s and 10 ran past 120 s at 2 GB.
    line = refused_sweep(tmp_path, laughs(10))
    assert line == (
        "error: sweep.yaml: line 8, column 12: alias *a4 makes the aliases of this file repeat "
        f"15,679 values, more than the {MAX_ALIASED_NODES:,} greenbench expands; write the "
        "values out instead"
    )


def test_merge_keys_cannot_grow_a_file_either(tmp_path: Path) -> None:
    line = refused_sweep(tmp_path, merges(40))
    assert "alias *m" in line and f"more than the {MAX_ALIASED_NODES:,}" in line


@pytest.mark.parametrize("content", [
    "name: x\ndescription: &a [*a]\n",
    "name: x\ndescription: &a {b: [1, *a]}\n",
], ids=["list", "mapping"])
def test_an_alias_inside_what_it_repeats_is_refused(tmp_path: Path, content: str) -> None:
    line = refused_sweep(tmp_path, content)
    assert "line 2" in line and "alias *a is inside the value it repeats" in line


def test_an_error_message_does_not_spell_out_what_aliases_repeat(tmp_path: Path) -> None:
    # 9,000 aliases of one 400 kB text are few enough values to expand, but the message about
    # them once held repr() of the whole list (3.6 GB) to show its first 60 characters. Run
    # under a 2 GB address-space limit, which that exceeded and greenbench is far below.
    import resource

    limit = 2 * 2**30
    text = "x" * 400_000
    (tmp_path / "sweep.yaml").write_text(
        f"name: x\ndescription: [&b {text}, {', '.join(['*b'] * 9000)}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "greenbench", "run", "sweep.yaml", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=GUARD_S,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("error: sweep.yaml: description: ['xxxx")
    assert done.stderr.strip().endswith("... should be text")
    assert len(done.stderr) < 200


def test_a_few_aliases_are_still_plain_yaml(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(
        "name: x\ntrain: &budget {steps: 5}\nseed: &s 3\ngrid: {latent_dim: [*s, 8]}\n"
        "eval: {<<: {num_samples: 50}, importance_samples: 2}\n"
    )
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert sweep.train.steps == 5 and sweep.values("latent_dim") == [3, 8]
    assert sweep.eval.num_samples == 50


# --------------------------------------------------------------------------- size and kind


def test_a_file_over_1_mb_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    # Valid YAML, valid sweep: only its size is wrong (a comment pads it past the limit).
    content = "name: x\n#" + "x" * MAX_BYTES + "\n"
    line = refused_sweep(tmp_path, content)
    assert line == ("error: sweep.yaml: larger than 1,000,000 bytes (1 MB), the most a sweep or "
                    "budgets file may be")


def test_a_file_just_under_the_limit_is_read(tmp_path: Path) -> None:
    content = "name: x\n#"
    (tmp_path / "sweep.yaml").write_text(content + "x" * (MAX_BYTES - len(content) - 1) + "\n")
    assert (tmp_path / "sweep.yaml").stat().st_size == MAX_BYTES
    assert load_sweep(tmp_path / "sweep.yaml").name == "x"


def test_dev_zero_is_not_read_forever(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    line = refused(tmp_path, "run", "zero.yaml", file="zero.yaml")
    assert "not a regular file (a character device)" in line
    with pytest.raises(UserError, match=r"^/dev/zero: not a regular file"):
        load_sweep("/dev/zero")


def test_a_fifo_without_a_writer_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "sweep.yaml")
    line = refused(tmp_path, "run", "sweep.yaml")
    assert "not a regular file (a pipe or FIFO)" in line


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("content", [
    nested(1000, "[", "]"),
    nested(1000, "{a: ", "}"),
    "name: x\ndescription:\n" + "- " * 1000 + "x\n",
    "name: x\n" + "".join(" " * i + "a:\n" for i in range(300)),
    "name: x\ndescription: " + "[" * 200_000 + "\n",  # never closed: refused before the end
], ids=["flow lists", "flow mappings", "block lists", "block mappings", "unclosed"])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path, content: str) -> None:
    line = refused_sweep(tmp_path, content)
    assert f"nested more than {MAX_DEPTH} levels deep" in line
    assert "line " in line


def test_nesting_a_real_file_needs_is_fine(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(nested(MAX_DEPTH - 1, "[", "]"))  # under the cap...
    with pytest.raises(UserError, match=r"description: \[\[\[\[.* should be text$"):
        load_sweep(tmp_path / "sweep.yaml")  # ...so it parses and meets the schema


# --------------------------------------------------------------------------- point count


def grid_file(seeds: int, widths: int, repeats: int = 1) -> str:
    return (f"name: big\nrepeats: {repeats}\ngrid:\n"
            f"  seed: [{', '.join(str(i) for i in range(seeds))}]\n"
            f"  width: [{', '.join(str((i + 1) / 100) for i in range(widths))}]\n")


def test_a_million_point_grid_is_refused_without_expanding_it(tmp_path: Path) -> None:
    # Before: the dry run expanded all 10**6 points (155 s, 1.3 GB) and listed them.
    line = refused_sweep(tmp_path, grid_file(1000, 1000))
    assert line == ("error: sweep.yaml: grid: 1,000,000 points is more than the 100,000 a sweep "
                    "may have; split it into smaller sweeps")


@pytest.mark.parametrize("seeds, widths, repeats, expected", [
    (1000, 100, 1, None),
    (1000, 10, 10, None),
    (1000, 101, 1, "grid: 101,000 points is more than the 100,000 a sweep may have"),
    (1000, 10, 11, "grid: 10,000 grid points x 11 repeats = 110,000 points is more than the "
                   "100,000"),
    (1, 1, MAX_POINTS + 1, "repeats: 100,001 points is more than the 100,000"),
])
def test_the_point_limit_counts_the_grid_times_repeats(
    tmp_path: Path, seeds: int, widths: int, repeats: int, expected: str | None
) -> None:
    (tmp_path / "sweep.yaml").write_text(grid_file(seeds, widths, repeats))
    if expected is None:  # at the limit: allowed (validated only; expanding it is slower)
        assert load_sweep(tmp_path / "sweep.yaml").point_count == MAX_POINTS
    else:
        with pytest.raises(UserError, match=f"^{tmp_path / 'sweep.yaml'}: {expected}"):
            load_sweep(tmp_path / "sweep.yaml")


def test_expand_refuses_repeats_raised_after_validation(tmp_path: Path) -> None:
    # `calibrate --repeats` raises repeats on a validated sweep; expand still counts first.
    (tmp_path / "sweep.yaml").write_text("name: x\ngrid: {seed: [0, 1]}\n")
    sweep = load_sweep(tmp_path / "sweep.yaml").model_copy(update={"repeats": MAX_POINTS})
    with pytest.raises(UserError, match=r"^sweep 'x': grid: 2 grid points x 100,000 repeats"):
        expand(sweep)


def test_the_duplicate_check_of_a_long_axis_is_linear(tmp_path: Path) -> None:
    # 140,000 seeds (as many as fit in 1 MB) with the repeat at the very end: comparing each
    # value with all before it (the old check) took minutes; a set finds it in one pass.
    seeds = ",".join(str(i) for i in range(140_000))
    line = refused_sweep(tmp_path, f"name: x\ngrid:\n  seed: [{seeds},0]\n")
    assert line == ("error: sweep.yaml: grid.seed: 0 appears twice; use repeats to run a point "
                    "again")


def test_a_dry_run_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    # A long listing (2,000 points, more than a pipe holds) read only in part.
    (tmp_path / "sweep.yaml").write_text(grid_file(200, 10))
    child = subprocess.Popen(
        [sys.executable, "-m", "greenbench", "run", "sweep.yaml", "--dry-run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()
    try:
        assert child.wait(timeout=GUARD_S) == 0
    finally:
        child.kill()
    assert b"to run" in first
    assert child.stderr.read() == b""  # no BrokenPipeError, no traceback
    child.stderr.close()


# --------------------------------------------------------------------------- budget files


def results_folder(folder: Path) -> None:
    records = folder / "runs" / "s" / "records"
    records.mkdir(parents=True)
    (records / "a0.json").write_text(to_json(record("a0")))


BAD_BUDGETS = {
    "billion laughs": (laughs(10, key="rules").replace("name: x\n", ""), "alias *a4 makes"),
    "over 1 MB": ("#" + "x" * MAX_BYTES + "\n- {name: x, metric: kid, max: 1}\n",
                  "larger than 1,000,000 bytes (1 MB)"),
    "deep": ("- name: x\n  metric: kid\n  max: 1\n  select: {model: " + "[" * 1000 + "\n",
             f"nested more than {MAX_DEPTH} levels deep"),
    "NUL in a rule name": ('- {name: "energy\\0", metric: kid, max: 1}\n',
                           "rules[0].name: 'energy\\x00' holds a NUL character"),
}


@pytest.mark.parametrize("content, expected", BAD_BUDGETS.values(), ids=BAD_BUDGETS.keys())
def test_budget_files_have_the_same_limits(tmp_path: Path, content: str, expected: str) -> None:
    results_folder(tmp_path)
    (tmp_path / "budgets.yaml").write_text(content)
    line = refused(tmp_path, "check", "budgets.yaml", "runs/s", "--junit", "junit.xml",
                   file="budgets.yaml")
    assert expected in line
