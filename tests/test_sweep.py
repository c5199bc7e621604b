"""Sweep schema and expansion: defaults, numbers as people write them, stable run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from greenbench.errors import UserError
from greenbench.records import run_id
from greenbench.sweep.schema import expand, load_sweep


def sweep_from(tmp_path: Path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_sweep(path)


def test_defaults_fill_a_minimal_sweep(tmp_path: Path) -> None:
    (spec,) = expand(sweep_from(tmp_path, "name: minimal\n"))
    assert spec.config == {
        "model": "gan", "dataset": "digits", "image_size": 16, "precision": "32-true",
        "width": 1.0, "data_fraction": 1.0, "seed": 0, "repeat": 0, "latent_dim": 32,
        "batch_size": 64, "epochs": 1, "steps": None, "lr": 2e-4,
        "eval": {"num_samples": 1000, "every_n_epochs": None, "target_kid": None,
                 "min_extractor_accuracy": None, "importance_samples": 16},
    }
    assert spec.sweep == "minimal" and spec.dataset_root is None


def test_learning_rate_in_scientific_notation_works_as_written(tmp_path: Path) -> None:
    sweep = sweep_from(tmp_path, "name: x\nmodel: vae\ntrain: {lr: 2e-4, steps: 1e3}\n")
    (spec,) = expand(sweep)
    assert spec.config["lr"] == 0.0002
    assert spec.config["steps"] == 1000 and spec.config["epochs"] is None


def test_model_default_learning_rate(tmp_path: Path) -> None:
    specs = expand(sweep_from(tmp_path, "name: x\ngrid: {model: [gan, vae]}\n"))
    assert [s.config["lr"] for s in specs] == [2e-4, 1e-3]


def test_grid_times_repeats_in_axis_order(tmp_path: Path) -> None:
    sweep = sweep_from(tmp_path, (
        "name: x\nrepeats: 2\n"
        "grid: {model: [gan, vae], width: [0.5, 1.0], precision: [32-true, bf16-mixed]}\n"
    ))
    specs = expand(sweep)
    assert len(specs) == 2 * 2 * 2 * 2
    assert [s.label for s in specs[:3]] == [
        "gan 32-true w=0.5 f=1 seed=0 #0",
        "gan 32-true w=0.5 f=1 seed=0 #1",
        "gan 32-true w=1 f=1 seed=0 #0",
    ]
    assert len({s.run_id for s in specs}) == len(specs)
    # A repeat is the identical point, same seed; only the repeat index differs.
    first, second = specs[0].config, specs[1].config
    assert {k for k in first if first[k] != second[k]} == {"repeat"}


def test_run_id_depends_on_what_is_trained_not_on_names_or_spelling(tmp_path: Path) -> None:
    a = expand(sweep_from(tmp_path, "name: a\nwidth: 1\ntrain: {epochs: 2}\n"))[0]
    b = expand(sweep_from(tmp_path, (
        "name: b\ndescription: other words\noutput_dir: elsewhere\nwidth: 1.0\n"
        "train: {epochs: 2.0}\n"
    )))[0]
    assert a.run_id == b.run_id
    c = expand(sweep_from(tmp_path, "name: a\nwidth: 1\ntrain: {epochs: 3}\n"))[0]
    assert c.run_id != a.run_id


def test_run_id_is_fixed_for_a_given_config() -> None:
    # The id is part of the on-disk format: records written by one version must be found by the
    # next. A change here means every stored sweep re-runs; change it only with the schema.
    config = {
        "model": "gan", "dataset": "digits", "image_size": 16, "precision": "32-true",
        "width": 1.0, "data_fraction": 1.0, "seed": 0, "repeat": 0, "latent_dim": 32,
        "batch_size": 64, "epochs": 1, "steps": None, "lr": 2e-4,
        "eval": {"num_samples": 1000, "every_n_epochs": None, "target_kid": None,
                 "min_extractor_accuracy": None, "importance_samples": 16},
    }
    same = [run_id({**config, "width": 1}), run_id(dict(reversed(config.items())))]
    assert same == [run_id(config)] * 2
    assert len(run_id(config)) == 12
    assert run_id(config) == "5daf3cd1c533"


def test_resolved_sweep_loads_back_to_the_same_points(tmp_path: Path) -> None:
    sweep = sweep_from(tmp_path, (
        "name: x\ntrain: {steps: 5}\nseed: 3\n"
        "grid: {model: [gan, vae], data_fraction: [0.5, 1]}\n"
    ))
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(sweep.resolved_yaml())
    assert yaml.safe_load(resolved.read_text())["grid"]["data_fraction"] == [0.5, 1.0]
    assert [s.run_id for s in expand(load_sweep(resolved))] == [s.run_id for s in expand(sweep)]


def test_relative_dataset_root_is_resolved_and_not_hashed(tmp_path: Path, workdir: Path) -> None:
    from tests.helpers import write_idx_dataset

    write_idx_dataset(tmp_path / "data", "mnist")
    sweep = sweep_from(tmp_path, "name: x\ndataset: {name: mnist, root: data}\nbatch_size: 4\n")
    (spec,) = expand(sweep)
    assert spec.dataset_root == str((tmp_path / "data").resolve())
    assert spec.config["image_size"] == 28
    assert "root" not in spec.config


def test_errors_are_user_errors_with_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^.*sweep\.yaml: width: -1 should be greater than 0$"):
        sweep_from(tmp_path, "name: x\nwidth: -1\n")


@pytest.mark.parametrize("name", [
    "sweeps/quickstart.yaml", "sweeps/gpu.yaml", "sweeps/ci.yaml", "benchmarks/eval_cost.yaml",
])
def test_committed_sweeps_are_valid(name: str) -> None:
    path = Path(__file__).resolve().parent.parent / name
    assert expand(load_sweep(path))
