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


def test_expansion_order_and_run_ids_are_unchanged(tmp_path: Path) -> None:
    # Pinned from the expansion before it was reworked for large grids: the same sweep gives
    # the same points, in the same order, with the same ids.
    import hashlib

    sweep = sweep_from(tmp_path, (
        "name: golden\nrepeats: 2\ntrain: {steps: 3}\neval: {num_samples: 50}\n"
        "grid: {model: [gan, vae], width: [0.5, 1], precision: [32-true, bf16-mixed], "
        "seed: [0, 7]}\n"
    ))
    specs = expand(sweep)
    assert len(specs) == sweep.point_count == 32
    assert (specs[0].run_id, specs[-1].run_id) == ("43dc3fde5736", "4c781a67c101")
    ids = " ".join(s.run_id for s in specs).encode()
    assert hashlib.sha256(ids).hexdigest()[:16] == "6eff46bdedda9d2d"
    # What the points share is computed once, but no two specs share a mutable dict.
    first, second = specs[0], specs[1]
    assert first.config["eval"] == second.config["eval"]
    assert first.config["eval"] is not second.config["eval"]
    assert first.energy is not second.energy and first.carbon is not second.carbon


def test_one_and_one_point_zero_are_the_same_grid_value(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"sweep\.yaml: grid\.width: 1\.0 appears twice"):
        sweep_from(tmp_path, "name: x\ngrid: {width: [1, 0.5, 1.0]}\n")
    with pytest.raises(UserError, match=r"grid\.seed: 3 appears twice"):
        sweep_from(tmp_path, "name: x\ngrid: {seed: [3, 4, 3.0]}\n")


# A number written in quotes is a mistake, not a spelling: refused in every numeric field.
QUOTED_NUMBERS = {
    "width in grid": ('grid: {width: [0.5, "1.0"]}', "grid.width[1]", "1.0"),
    "lr": ('train: {lr: "0.001"}', "train.lr", "0.001"),
    "eval.num_samples": ('eval: {num_samples: "500"}', "eval.num_samples", "500"),
    "energy.idle_seconds": ('energy: {idle_seconds: "2"}', "energy.idle_seconds", "2"),
    "carbon.pue": ('carbon: {pue: "1.2"}', "carbon.pue", "1.2"),
    "executor.cpus_per_point": ('executor: {cpus_per_point: "2"}',
                                "executor.cpus_per_point", "2"),
    "seed in grid": ('grid: {seed: [1, "2"]}', "grid.seed[1]", "2"),
    "repeats": ('repeats: "3"', "repeats", "3"),
}


@pytest.mark.parametrize("line, field, text", QUOTED_NUMBERS.values(), ids=QUOTED_NUMBERS.keys())
def test_a_number_in_quotes_is_refused(tmp_path: Path, line: str, field: str, text: str) -> None:
    with pytest.raises(UserError) as error:
        sweep_from(tmp_path, f"name: x\n{line}\n")
    assert str(error.value).endswith(
        f"sweep.yaml: {field}: expected a number, got the text '{text}' (write it without quotes)"
    )


def _probe(loc: tuple[str, ...], value):
    """``value`` at ``loc`` (a field, or a section's field) of a minimal sweep: what validation
    makes of it, or None when it is refused."""
    from pydantic import ValidationError

    from greenbench.sweep.schema import Sweep

    data = {"name": "x", loc[0]: value if len(loc) == 1 else {loc[1]: value}}
    try:
        result = Sweep.model_validate(data)
    except ValidationError:
        return None
    for part in loc:
        result = getattr(result, part)
    return result


def test_every_numeric_field_refuses_a_number_in_quotes() -> None:
    # Found by probing, so a numeric field added later is held to the rule too: a field is
    # numeric when some plain number validates and stays a number there (a boolean is not).
    from greenbench.sweep.schema import Sweep

    sections = {name for name, field in Sweep.model_fields.items()
                if hasattr(field.annotation, "model_fields")}
    fields = [(name,) for name in Sweep.model_fields if name not in sections]
    fields += [(section, name) for section in sections
               for name in Sweep.model_fields[section].annotation.model_fields]
    numeric = []
    for loc in fields:
        as_value = (lambda v: [v]) if loc[0] == "grid" else (lambda v: v)
        number = next((n for n in (1, 0.5, 2, 10, 16)
                       if type(_probe(loc, as_value(n))) in (int, float, list)), None)
        if number is None:
            continue
        numeric.append(loc)
        assert _probe(loc, as_value(str(number))) is None, f"{loc} takes the text {number!r}"
    assert len(numeric) == 32  # every numeric field of the schema was probed
    assert {("repeats",), ("width",), ("train", "lr"), ("eval", "num_samples"),
            ("energy", "idle_seconds"), ("carbon", "pue"), ("executor", "cpus_per_point"),
            ("grid", "width"), ("grid", "seed"), ("dataset", "image_size")} <= set(numeric)
    assert ("executor", "exclusive_node") not in numeric and ("grid", "model") not in numeric
