"""A user's own LightningModule and LightningDataModule in a sweep, by class_path: the sweep
file, the checks before any point, data_fraction on any data module, quality from what the
module logs, and the reference models on the same path. The user's classes live in
tests/plugins/tinyproject.py, which does not import greenbench; each test copies it beside its
sweep file."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from greenbench import cli as command_line
from greenbench.point.run import run_point
from greenbench.point.subset import read_labels, training_subset
from greenbench.sweep.schema import expand, load_sweep
from tests.helpers import cli, greenbench, read_records, tiny_spec

PROJECT = Path(__file__).parent / "plugins" / "tinyproject.py"
REPO = Path(__file__).parent.parent

CLASSIFIER = """\
name: blobs
model:
  class_path: tinyproject.BlobsClassifier
  init_args: {hidden: 32, lr: 0.05, trace: trace.jsonl}
  width_arg: hidden
data: {class_path: tinyproject.BlobsData, init_args: {batch_size: 16, count: 128}}
quality: {metric: val_acc, mode: max}
train: {epochs: 1}
energy: {idle_seconds: 0, warmup_steps: 2}
"""
AXES = """\
precision: bf16-mixed
width: 0.5
grid:
  data_fraction: [0.5, 1.0]
  model.init_args.lr: [0.01, 0.1]
"""
GENERATOR = """\
name: gen
model: {class_path: tinyproject.TinyGenerator, init_args: {latent: 4}}
dataset: {name: digits, image_size: 8}
quality: {metric: val_mean_gap, mode: min}
train: {epochs: 1}
eval: {num_samples: 50}
generate: {num_images: 64, batch_size: 32}
energy: {idle_seconds: 0, warmup_steps: 2}
"""


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classes write their trace relative to the working folder: never the source tree."""
    monkeypatch.chdir(tmp_path)


def project(folder: Path, sweep: str) -> Path:
    shutil.copy(PROJECT, folder / "tinyproject.py")
    path = folder / "sweep.yaml"
    path.write_text(sweep)
    return path


def test_a_users_classes_sweep_over_a_fraction_and_an_init_arg(
    tmp_path: Path,
) -> None:
    project(tmp_path, CLASSIFIER + AXES)

    run = greenbench("run", "sweep.yaml", cwd=tmp_path, timeout=600)

    assert run.returncode == 0, run.stderr
    records = list(read_records(tmp_path / "runs" / "blobs").values())
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    # what reached the constructors, as they wrote it themselves
    built = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    models = sorted((b["hidden"], b["lr"]) for b in built if b["cls"] == "BlobsClassifier")
    assert models == sorted((r["model"]["init_args"]["hidden"], r["config"]["model_init_args"]
                             ["lr"]) for r in records)
    assert set(models) == {(16, 0.01), (16, 0.1)}
    assert all(b["batch_size"] == 16 for b in built if b["cls"] == "BlobsData")
    for record in records:
        config = record["config"]
        assert config["model"] == record["model"]["class_path"] == "tinyproject.BlobsClassifier"
        assert record["model"]["init_args"]["hidden"] == round(32 * config["width"])
        assert record["data"]["class_path"] == "tinyproject.BlobsData"
        assert len(record["model"]["source_sha256"]) == 64
        assert record["quality"]["metric"] == "val_acc" and record["quality"]["mode"] == "max"
        assert 0 <= record["quality"]["final"]["val_acc"] <= 1
        assert record["quality_curve"][-1]["val_acc"] == record["quality"]["final"]["val_acc"]
        assert record["energy"]["windows"]["fit"]["total_j"] > 0
    # data_fraction 0.5 trains on half the items of 1.0, a stratified half (labels readable)
    seen = {(r["config"]["model_init_args"]["lr"], r["config"]["data_fraction"]): r
            for r in records}
    for (lr, fraction), record in seen.items():
        assert record["config"]["precision"] == "bf16-mixed"
        if fraction == 0.5:
            whole = seen[(lr, 1.0)]
            assert record["train"]["samples_seen"] * 2 == whole["train"]["samples_seen"] == 128
            assert record["data"]["subset"] == "stratified" and whole["data"]["subset"] == "all"
            assert record["data"]["train_items"] == 64
    assert "lr=0.01" in run.stderr and "lr=0.1" in run.stderr  # the varied init arg, labelled
    assert len({r["run_id"] for r in records}) == 4

    report = cli("report", "runs/blobs", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    markdown = (tmp_path / "runs" / "blobs" / "report" / "report.md").read_text()
    assert "val\\_acc" in markdown and "model.init\\_args.lr" in markdown
    with open(tmp_path / "runs" / "blobs" / "report" / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["model.init_args.lr"] for row in rows} == {"0.01", "0.1"}
    assert all(0 <= float(row["val_acc"]) <= 1 for row in rows)
    assert "val\\_acc (higher is better; mode max)" in markdown  # the Notes: its direction

    (tmp_path / "budgets.yaml").write_text(BUDGETS)
    check = cli("check", "budgets.yaml", "runs/blobs", cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    # the floor holds for every configuration at lr 0.1; the impossible one fails each
    assert "2 pass, 2 fail" in check.stdout, check.stdout
    assert "higher is better for val_acc" in check.stdout


BUDGETS = """\
rules:
  - name: lr 0.1 learns something
    select: {"model.init_args.lr": 0.1}
    metric: val_acc
    min: 0.0
  - name: lr 0.01 is perfect
    select: {"model.init_args.lr": 0.01}
    metric: val_acc
    min: 1.01
"""


def test_a_generative_module_gets_kid_besides_its_logged_metric(tmp_path: Path) -> None:
    sweep = load_sweep(project(tmp_path, GENERATOR))
    (spec,) = expand(sweep)

    result = run_point(spec)

    record = result.record
    assert record["status"] == "ok", record["reason"]
    final = record["quality"]["final"]
    assert final["kid"] is not None and final["fid"] is not None and "val_mean_gap" in final
    assert record["quality"]["extractor"]["id"].startswith("digits-8px-")
    assert record["generation"]["images"] == 64
    assert f"images/{spec.run_id}.png" in result.files


@pytest.mark.parametrize("labelled", [True, False])
def test_a_generative_module_on_its_own_data_is_scored_with_an_extractor_for_that_data(
    tmp_path: Path, labelled: bool,
) -> None:
    data = "{class_path: tinyproject.PatternData, init_args: {labelled: %s}}"
    sweep = GENERATOR.replace("dataset: {name: digits, image_size: 8}",
                              "data: " + data.replace("%s", str(labelled).lower()))
    (spec,) = expand(load_sweep(project(tmp_path, sweep)))

    record = run_point(spec).record

    assert record["status"] == "ok", record["reason"]
    quality = record["quality"]
    assert quality["final"]["val_mean_gap"] >= 0
    if labelled:  # an extractor trained on the data module's own labelled images
        assert quality["final"]["kid"] is not None and quality["withheld"] is None
        assert quality["extractor"]["id"].startswith("tinyproject.PatternData-8px-")
    else:
        assert "kid" not in quality["final"] and quality["extractor"] is None
        assert quality["withheld"] == ("feature-space metrics withheld: the data's images carry "
                                       "no integer labels to train a feature extractor on")
    assert record["data"]["subset"] == "all" and record["data"]["train_items"] == 256


def test_a_metric_the_module_never_logs_fails_the_point_naming_what_it_logged(
    tmp_path: Path,
) -> None:
    sweep = load_sweep(project(tmp_path, CLASSIFIER.replace("metric: val_acc", "metric: val_f1")))
    (spec,) = expand(sweep)

    record = run_point(spec).record

    assert record["status"] == "failed"
    assert record["reason"] == ("quality.metric 'val_f1' was never logged in validation; the "
                                "module logged: train_loss, val_acc")


def test_the_reference_models_take_the_same_path_and_keep_their_run_ids() -> None:
    record = run_point(tiny_spec(steps=2)).record

    assert record["status"] == "ok", record["reason"]
    assert record["model"]["class_path"] == "greenbench.models.gan.GAN"
    assert record["model"]["init_args"]["width"] == record["config"]["width"]
    assert record["data"]["subset"] == "all" and record["data"]["train_images"] == 1437
    assert record["quality"]["metric"] == "kid" and record["quality"]["mode"] == "min"
    # the quickstart's points have the run_ids of its committed report
    with open(REPO / "reports" / "quickstart" / "results.csv", newline="") as file:
        committed = {row["run_id"] for row in csv.DictReader(file)}
    assert {s.run_id for s in expand(load_sweep(REPO / "sweeps" / "quickstart.yaml"))} == committed


def test_a_class_whose_source_changed_is_named_once_on_resume(tmp_path: Path) -> None:
    project(tmp_path, CLASSIFIER + "executor: {start: cold}\n")  # a fresh interpreter imports
    assert greenbench("run", "sweep.yaml", cwd=tmp_path).returncode == 0
    with open(tmp_path / "tinyproject.py", "a") as file:
        file.write("\n# edited\n")

    again = greenbench("run", "sweep.yaml", cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert again.stderr.count("the source of tinyproject.BlobsClassifier changed since 1 "
                              "recorded point(s) ran") == 1
    assert "1 already recorded, 0 to run" in again.stderr


# --------------------------------------------------------------------------- the checks

BAD_SWEEPS = {  # (change to CLASSIFIER, what the one line must say)
    "class cannot be imported": (
        ("tinyproject.BlobsClassifier", "nosuchpkg.Net"),
        "model.class_path: cannot import nosuchpkg (ModuleNotFoundError: No module named "
        "'nosuchpkg')"),
    "no such class in the module": (
        ("tinyproject.BlobsClassifier", "tinyproject.BlobsClassifer"),
        "model.class_path: tinyproject has no attribute named 'BlobsClassifer'"),
    "the module's own import fails": (
        ("tinyproject.BlobsClassifier", "broken.Net"),
        "model.class_path: cannot import broken (ModuleNotFoundError: No module named "
        "'nothing_here')"),
    "not a LightningModule": (
        ("tinyproject.BlobsClassifier", "tinyproject.NotAModule"),
        "model.class_path: tinyproject.NotAModule is not a LightningModule"),
    "not a LightningDataModule": (
        ("tinyproject.BlobsData", "tinyproject.Blobs"),
        "data.class_path: tinyproject.Blobs is not a LightningDataModule"),
    "data class cannot be imported": (
        ("tinyproject.BlobsData", "tinyproject.NoData"),
        "data.class_path: tinyproject has no attribute named 'NoData'"),
    "unknown model init arg": (
        ("hidden: 32, lr", "hiden: 32, lr"),
        "model.init_args.hiden: BlobsClassifier.__init__ has no argument 'hiden'; did you "
        "mean 'hidden'?"),
    "unknown data init arg": (
        ("batch_size: 16, count", "batchsize: 16, count"),
        "data.init_args.batchsize: BlobsData.__init__ has no argument 'batchsize'; did you "
        "mean 'batch_size'?"),
    "unknown init arg as a grid axis": (
        ("train: {epochs: 1}", "train: {epochs: 1}\ngrid: {model.init_args.no_such_arg: [1]}"),
        "grid.model.init_args.no_such_arg: BlobsClassifier.__init__ has no argument "
        "'no_such_arg'"),
    "width_arg not a whole number": (
        ("width_arg: hidden", "width_arg: lr"),
        "model.width_arg: 'lr' must be a whole-number init arg that width multiplies; it has "
        "0.05"),
    "width_arg not an init arg": (
        ("width_arg: hidden", "width_arg: depth"),
        "model.width_arg: BlobsClassifier.__init__ has no argument 'depth'"),
    "quality without a metric": (
        ("{metric: val_acc, mode: max}", "{mode: max}"), "quality.metric: required"),
    "a direction against greenbench's own metric": (
        ("{metric: val_acc, mode: max}", "{metric: kid, mode: max}"),
        "quality.mode: kid is greenbench's own metric, better when lower: mode min or none"),
    "quality metric without a direction": (
        ("{metric: val_acc, mode: max}", "{metric: val_acc}"),
        "quality.mode: give max or min, whichever is better for 'val_acc'"),
    "no quality for a module that cannot sample": (
        ("quality: {metric: val_acc, mode: max}\n", ""),
        "quality: give quality.metric, a metric BlobsClassifier logs in validation"),
    "dataset and data both": (
        ("train: {epochs: 1}", "train: {epochs: 1}\ndataset: {name: digits}"),
        "data: give a built-in dataset or a data module (data), not both"),
    "width varied without width_arg": (
        ("  width_arg: hidden\n", "width: 0.5\n"),
        "width: a class model needs model.width_arg"),
    "latent_dim on a class model": (
        ("train: {epochs: 1}", "train: {epochs: 1}\nlatent_dim: 8"),
        "latent_dim: set by the reference models only; give it in model.init_args"),
    "an init arg that is a mapping": (
        ("hidden: 32, lr", "hidden: {a: 1}, lr"),
        "model.init_args.hidden: dicts are not supported as init args"),
}


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_each_bad_class_in_a_sweep_is_one_line_exit_2_and_nothing_written(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    (old, new), expected = BAD_SWEEPS[case]
    assert old in CLASSIFIER
    project(tmp_path, CLASSIFIER.replace(old, new))
    (tmp_path / "broken.py").write_text("import nothing_here\n")
    monkeypatch.chdir(tmp_path)

    code = command_line.main(["run", "sweep.yaml"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: sweep.yaml: "), err
    assert expected in err, err
    assert not (tmp_path / "runs").exists()


def test_an_init_arg_axis_on_a_reference_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    (tmp_path / "sweep.yaml").write_text("name: x\ngrid: {model.init_args.lr: [0.1]}\n")
    monkeypatch.chdir(tmp_path)

    assert command_line.main(["run", "sweep.yaml"]) == 2
    assert "grid.model.init_args.lr: the reference models take no init_args" in \
        capsys.readouterr().err


# --------------------------------------------------------------------------- data_fraction


class Unlabelled(Dataset):
    def __init__(self, count: int):
        self.values = torch.arange(count, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.values[index]}


def collate(items: list[dict]) -> torch.Tensor:
    return torch.stack([item["x"] for item in items])


def test_a_subset_keeps_the_loaders_settings_and_is_random_without_labels() -> None:
    loader = DataLoader(Unlabelled(100), batch_size=10, shuffle=False, drop_last=True,
                        collate_fn=collate)

    subset, summary = training_subset(loader, 0.3, seed=0)

    assert summary == {"subset": "random", "train_items": 30, "train_split_items": 100}
    assert subset.batch_size == 10 and subset.drop_last and subset.collate_fn is collate
    batches = list(subset)
    assert len(batches) == 3 and all(b.shape == (10,) for b in batches)
    values = torch.cat(batches)
    assert values.tolist() == sorted(values.tolist())  # sequential stays sequential
    assert training_subset(loader, 0.3, seed=0)[0].dataset.indices == subset.dataset.indices
    assert training_subset(loader, 0.3, seed=1)[0].dataset.indices != subset.dataset.indices


def test_a_stratified_subset_keeps_every_class_in_proportion() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    loader = DataLoader(TensorDataset(torch.zeros(100, 2), labels), batch_size=5, shuffle=True)

    subset, summary = training_subset(loader, 0.5, seed=0)

    assert summary["subset"] == "stratified" and summary["train_items"] == 50
    kept = labels[subset.dataset.indices]
    assert [int((kept == c).sum()) for c in range(3)] == [30, 15, 5]
    assert isinstance(subset.sampler, torch.utils.data.RandomSampler)  # shuffled stays shuffled


def test_labels_are_read_from_targets_or_integer_items_and_not_from_floats() -> None:
    class WithTargets(Unlabelled):
        targets = [0, 1] * 50

    class FloatLabels(Unlabelled):
        def __getitem__(self, index: int) -> tuple:
            return self.values[index], 0.5

    assert read_labels(WithTargets(100)).tolist() == [0, 1] * 50
    assert read_labels(FloatLabels(4)) is None


def test_loaders_that_cannot_be_subset_are_refused_with_the_reason() -> None:
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    with pytest.raises(ValueError, match="map-style training dataset"):
        training_subset(DataLoader(Stream(), batch_size=2), 0.5, seed=0)
    weighted = torch.utils.data.WeightedRandomSampler([1.0] * 100, 100)
    with pytest.raises(ValueError, match="uses WeightedRandomSampler"):
        training_subset(DataLoader(Unlabelled(100), batch_size=5, sampler=weighted,
                                   collate_fn=collate), 0.5, seed=0)
    with pytest.raises(ValueError, match="leaves 4 of 100 training items, fewer than the batch"):
        training_subset(DataLoader(Unlabelled(100), batch_size=8, drop_last=True,
                                   collate_fn=collate), 0.04, seed=0)
    whole = DataLoader(Stream(), batch_size=2)
    assert training_subset(whole, 1.0, seed=0)[0] is whole  # nothing to subset


# --------------------------------------------------------------------------- the examples


def test_the_examples_sweeps_check_out_and_the_readme_shows_the_classifier_as_it_is() -> None:
    import yaml

    examples = REPO / "examples"
    assert len(expand(load_sweep(examples / "classifier.yaml"))) == 16
    assert len(expand(load_sweep(examples / "generative.yaml"))) == 4
    long = expand(load_sweep(examples / "classifier-long.yaml"))
    short = expand(load_sweep(examples / "classifier.yaml"))
    assert [s.label for s in long] == [s.label for s in short]  # the same axes, longer
    readme = (REPO / "README.md").read_text()
    block = readme.split("# examples/classifier.yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load((examples / "classifier.yaml").read_text())


def test_preparing_scoring_leaves_the_training_random_stream_as_it_was() -> None:
    from types import SimpleNamespace

    from greenbench.data.module import BuiltinDataModule
    from greenbench.point.preparation import ScoringPreparation
    from greenbench.point.scoring import Scorer
    from greenbench.point.subset import TrainingSubset

    data = BuiltinDataModule("digits", None, 8, batch_size=32)
    data.setup("fit")
    spec = tiny_spec(image_size=8)
    scorer, timings = Scorer(spec.config), {}
    preparation = ScoringPreparation(scorer, TrainingSubset(data, 1.0, 0), True, timings)
    torch.manual_seed(0)
    state = torch.get_rng_state()

    preparation.setup(SimpleNamespace(datamodule=data), None, "fit")

    assert scorer.eval_data.train_images.shape == (1437, 1, 8, 8)
    assert scorer.eval_data.test_images.shape == (360, 1, 8, 8)
    assert scorer.extractor is not None and timings["extractor_s"] >= 0
    # iterating a loader and training an extractor draw from it: neither may
    assert torch.equal(torch.get_rng_state(), state)
