"""Malformed sweep files through the command line's ``main``, in this process: one line naming
the field, exit 2, no traceback, nothing written, and nothing executed. One case goes through
the real console entry point in a fresh process, to show the exit code and the line reach the
shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli, greenbench

VALID = """\
name: ok
dataset: {name: digits}
train: {epochs: 1}
"""

# (file content, what the one-line message must contain)
MALFORMED = {
    "empty file": ("", "the file is empty"),
    "only a comment": ("# nothing here\n", "the file is empty"),
    "top level is a list": ("- name: x\n", "top level must be a mapping"),
    "yaml syntax: unclosed list": ("name: x\ngrid:\n  width: [0.5, 1.0\n", "line 4"),
    "yaml syntax: bad indentation": ("name: x\n  train: {epochs: 1}\n", "line 2"),
    "duplicate key": ("name: x\nwidth: 0.5\nwidth: 1.0\n", "key 'width' appears twice"),
    "unknown top-level key": ("name: x\nwidht: 0.5\n", "widht: unknown key; did you mean 'width'?"),
    "unknown nested key": ("name: x\ntrain: {epoch: 3}\n",
                           "train.epoch: unknown key; did you mean 'epochs'?"),
    "unknown grid axis": ("name: x\ngrid: {precison: [32-true]}\n",
                          "grid.precison: unknown key; did you mean 'precision'?"),
    "missing name": ("train: {epochs: 1}\n", "name: required"),
    "bad precision in grid": ("name: x\ngrid: {precision: [32-true, 12-mixed]}\n",
                              "grid.precision[1]: '12-mixed' is not one of 32-true, 64-true"),
    "unknown model": ("name: x\nmodel: diffusion\n", "model: 'diffusion' is not one of gan, vae"),
    "wrong type: width is text": ("name: x\nwidth: wide\n",
                                  "width: expected a number, got the text 'wide'"),
    "a number in quotes": ('name: x\ntrain: {lr: "2e-4"}\n',
                           "train.lr: expected a number, got the text '2e-4' (write it without"),
    "wrong type: epochs is a list": ("name: x\ntrain: {epochs: [1, 2]}\n", "train.epochs"),
    "wrong type: boolean as number": ("name: x\nseed: true\n", "seed: expected a number, got true"),
    "fractional epochs": ("name: x\ntrain: {epochs: 1.5}\n", "train.epochs: 1.5"),
    "empty axis": ("name: x\ngrid: {width: []}\n", "grid.width"),
    "repeated axis value": ("name: x\ngrid: {width: [0.5, 0.5]}\n",
                            "grid.width: 0.5 appears twice"),
    "axis twice": ("name: x\nwidth: 0.5\ngrid: {width: [1.0]}\n",
                   "width: given both at top level and under grid"),
    "width zero": ("name: x\nwidth: 0\n", "width: 0"),
    "fraction above one": ("name: x\ndata_fraction: 1.5\n", "data_fraction: 1.5"),
    "fraction zero in grid": ("name: x\ngrid: {data_fraction: [0.5, 0]}\n",
                              "grid.data_fraction[1]"),
    "negative learning rate": ("name: x\ntrain: {lr: -1e-4}\n", "train.lr: -0.0001"),
    "infinite learning rate": ("name: x\ntrain: {lr: .inf}\n", "train.lr"),
    "epochs and steps": ("name: x\ntrain: {epochs: 1, steps: 10}\n",
                         "train: give epochs or steps, not both"),
    "image size too small": ("name: x\ndataset: {image_size: 4}\n", "dataset.image_size: 4"),
    "batch size one": ("name: x\nbatch_size: 1\n", "batch_size: 1"),
    "zero repeats": ("name: x\nrepeats: 0\n", "repeats: 0"),
    "unknown dataset": ("name: x\ndataset: {name: imagenet}\n",
                        "dataset.name: 'imagenet' is not one of digits, mnist"),
    "missing dataset root": ("name: x\ndataset: {name: mnist, root: /nonexistent/data}\n",
                             "dataset.root: /nonexistent/data"),
    "mnist without root": ("name: x\ndataset: {name: mnist}\n", "dataset.root: required for mnist"),
    "digits with a root": ("name: x\ndataset: {name: digits, root: /tmp}\n", "dataset.root"),
    "fraction leaves too few images": ("name: x\ndata_fraction: 0.01\nbatch_size: 64\n",
                                       "data_fraction: 0.01 leaves 14 of the 1437"),
    "name escapes output dir": ("name: ../../escape\n", "name: '../../escape' must be"),
    "name is dot-dot": ("name: '..'\n", "name: '..' must be"),
    "name with slash": ("name: a/b\n", "name: 'a/b' must be"),
    "name is a number": ("name: 12\n", "name: 12"),
    # A NUL character names no file: refused in any text, before a path is made of it.
    "NUL in output_dir": ('name: x\noutput_dir: "runs\\0x"\n',
                          "output_dir: 'runs\\x00x' holds a NUL character"),
    "NUL in dataset root": ('name: x\ndataset: {name: mnist, root: "data\\0"}\n',
                            "dataset.root: 'data\\x00' holds a NUL character"),
    "NUL in name": ('name: "x\\0y"\n', "name: 'x\\x00y' holds a NUL character"),
    "NUL in description": ('name: x\ndescription: "a\\0"\n', "description: 'a\\x00' holds a NUL"),
    "NUL in a key": ('name: x\ntrain: {"lr\\0": 1}\n', "train: the key 'lr\\x00' holds a NUL"),
    "raw NUL byte": ("name: x\ndescription: a\0b\n",
                     "line 2, column 15: character #x0000 is not allowed in YAML"),
    "a 5,000-digit number": ("name: x\nseed: " + "9" * 5000 + "\n",
                             "line 2, column 7: a number of 5,000 characters is too long to read"),
}


@pytest.mark.parametrize("content, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_sweep_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, content: str, expected: str
) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(content)
    before = sorted(tmp_path.rglob("*"))

    done = cli("run", "sweep.yaml", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("error: sweep.yaml: "), lines[0]
    assert expected in lines[0]
    assert done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # no runs/ folder, nothing at all


def test_yaml_tag_that_would_run_code_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "sweep.yaml").write_text(
        f"name: x\ndescription: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    done = cli("run", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "YAML tag !!python/object/apply:os.system is not allowed" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_missing_sweep_file(tmp_path: Path) -> None:
    done = cli("run", "nope.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: nope.yaml: no such file"


def test_a_directory_is_not_a_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    done = cli("run", "dir.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "is a directory" in done.stderr


def test_valid_sweep_passes_validation(tmp_path: Path) -> None:
    # The counterpart of the cases above: the same command accepts a good file.
    (tmp_path / "sweep.yaml").write_text(VALID)
    done = cli("run", "sweep.yaml", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 points, 1 to run" in done.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_the_console_command_prints_the_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("name: x\nwidht: 0.5\n")
    done = greenbench("run", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("error: sweep.yaml: widht: unknown key; did you mean 'width'?\n")
    assert done.stdout == "" and not (tmp_path / "runs").exists()
