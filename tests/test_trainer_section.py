"""A sweep's trainer section, LightningCLI's ``trainer:``: its checks before any point runs, a
point that trains exactly what plain Lightning trains with it, who stopped fit, the user's
loggers and checkpoints. Points run in this process (``run_point``); plain Lightning runs in a
process of its own, as a user would run it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greenbench.point.run import run_point
from greenbench.sweep.schema import expand, load_sweep
from tests.helpers import PROJECT, cli, tiny_spec

FIDELITY_PROJECT = Path(__file__).parent / "plugins" / "fidelity_project.py"

FIDELITY = """\
name: fidelity
model: {class_path: fidelity_project.Net, init_args: {hidden: 16, lr: 0.2}}
data:
  class_path: fidelity_project.CountingData
  init_args: {batch_size: 8, count: 96, trace: trace, tag: greenbench}
quality: {metric: val_loss, mode: min}
train: {epochs: 6}
energy: {idle_seconds: 0, warmup_steps: 2}
trainer:
  gradient_clip_val: 0.5
  num_sanity_val_steps: 1
  limit_val_batches: 2
  callbacks:
    - class_path: lightning.pytorch.callbacks.EarlyStopping
      init_args: {monitor: val_loss, patience: 0, min_delta: 10.0}
    - class_path: fidelity_project.FitLog
      init_args: {trace: trace, tag: greenbench}
grid:
  trainer.accumulate_grad_batches: [1, 2]
"""

# The same classes and settings as plain Lightning trains them: seed, data module, model, fit.
PLAIN = """\
import sys
sys.path.insert(0, ".")
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from fidelity_project import CountingData, FitLog, Net

for accumulate in (1, 2):
    seed_everything(0)
    data = CountingData(batch_size=8, count=96, trace="trace", tag="plain")
    model = Net(hidden=16, lr=0.2)
    trainer = Trainer(
        precision="32-true", max_epochs=6, gradient_clip_val=0.5, num_sanity_val_steps=1,
        limit_val_batches=2, accumulate_grad_batches=accumulate, default_root_dir="plain",
        callbacks=[EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0),
                   FitLog(trace="trace", tag="plain")])
    trainer.fit(model, datamodule=data)
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's classes write their traces relative to the working folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sweep_of(folder: Path, content: str, project: Path = FIDELITY_PROJECT):
    shutil.copy(project, folder / project.name)
    (folder / "sweep.yaml").write_text(content)
    return load_sweep(folder / "sweep.yaml")


def test_a_point_trains_what_plain_lightning_trains_with_the_same_trainer_section(
        in_tmp: Path) -> None:
    specs = expand(sweep_of(in_tmp, FIDELITY))
    records = {spec.config["trainer"]["accumulate_grad_batches"]: run_point(spec).record
               for spec in specs}
    plain = subprocess.run([sys.executable, "-c", PLAIN], cwd=in_tmp, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]

    for accumulate, record in records.items():
        assert record["status"] == "ok", record["reason"]
        ours = json.loads((in_tmp / f"trace-greenbench-acc{accumulate}.fit.json").read_text())
        theirs = json.loads((in_tmp / f"trace-plain-acc{accumulate}.fit.json").read_text())
        assert len(ours["losses"]) == len(theirs["losses"]) == record["train"]["batches"]
        assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-5)
        assert ours["optimizer_steps"] == theirs["optimizer_steps"] == record["train"][
            "optimizer_steps"]
        assert ours["epochs"] == theirs["epochs"]
        hooks = json.loads((in_tmp / f"trace-greenbench-acc{accumulate}.hooks.json").read_text())
        assert hooks == json.loads(
            (in_tmp / f"trace-plain-acc{accumulate}.hooks.json").read_text())
        assert hooks["on_after_batch_transfer"] > 0 and hooks["setup:fit"] == 1
        # EarlyStopping ended both runs after their second validation, long before 6 epochs
        assert record["train"]["stopped_by"] == "EarlyStopping"
        assert record["train"]["stopped_at"]["epoch"] == 1 and ours["epochs"] == 2  # 0 and 1
        assert record["train"]["additions"] == []  # the last epoch validated: nothing added
    assert records[2]["train"]["optimizer_steps"] * 2 == records[1]["train"]["optimizer_steps"]


def test_the_trainer_section_is_part_of_the_run_id_and_without_one_nothing_changes(
        in_tmp: Path) -> None:
    plain = "name: s\ndataset: {name: digits}\n"
    (in_tmp / "a.yaml").write_text(plain)
    (in_tmp / "b.yaml").write_text(plain + "trainer: {gradient_clip_val: 1.0}\n")
    (in_tmp / "c.yaml").write_text(plain + "grid: {trainer.gradient_clip_val: [null, 1.0]}\n")
    (a,), (b,) = expand(load_sweep(in_tmp / "a.yaml")), expand(load_sweep(in_tmp / "b.yaml"))
    assert "trainer" not in a.config and b.config["trainer"] == {"gradient_clip_val": 1.0}
    assert a.run_id != b.run_id
    grid = expand(load_sweep(in_tmp / "c.yaml"))
    assert [spec.config["trainer"] for spec in grid] == [{"gradient_clip_val": None},
                                                         {"gradient_clip_val": 1.0}]
    assert grid[1].run_id == b.run_id  # the same point, however it was written
    assert "gradient_clip_val=1.0" in grid[1].label


BAD = {  # (trainer section or grid, what the one line says)
    "an owned keyword": ("trainer: {max_epochs: 3}\n",
                         "trainer.max_epochs: set train.epochs instead"),
    "precision": ("trainer: {precision: bf16-mixed}\n",
                  "trainer.precision: set it as the precision axis instead"),
    "several nodes": ("trainer: {num_nodes: 2}\n", "trainer.num_nodes: a point runs on one "
                      "node"),
    "devices by index": ("trainer: {devices: [0, 1]}\n", "trainer.devices: [0, 1] is not a "
                         "number of devices; give how many a point runs on"),
    "no devices": ("grid: {trainer.devices: [2, 0]}\n", "grid.trainer.devices: 0 is not a "
                   "number of devices"),
    "a strategy misspelt": ("trainer: {strategy: dpp}\n", "trainer.strategy: 'dpp' is not a "
                            "strategy Lightning knows by name; did you mean 'ddp'?"),
    "a strategy that starts its own processes": (
        "trainer: {strategy: xla}\n", "trainer.strategy: xla starts its processes its own way"),
    "an unknown keyword": (
        "trainer: {gradient_clip_vall: 1.0}\n",
        "trainer.gradient_clip_vall: lightning.pytorch.Trainer has no argument "
        "'gradient_clip_vall'; did you mean 'gradient_clip_val'?"),
    "an unknown grid keyword": ("grid: {trainer.acumulate_grad_batches: [1, 2]}\n",
                                "grid.trainer.acumulate_grad_batches: lightning.pytorch.Trainer "
                                "has no argument"),
    "a keyword in the section and the grid": (
        "trainer: {accumulate_grad_batches: 2}\ngrid: {trainer.accumulate_grad_batches: [1]}\n",
        "grid.trainer.accumulate_grad_batches: given both in the trainer section and under "
        "grid"),
    "callbacks as a grid axis": (
        "grid: {trainer.callbacks: [1]}\n",
        "grid.trainer.callbacks: callbacks and logger cannot be grid axes"),
    "a callback that does not import": (
        "trainer: {callbacks: {class_path: nosuchpkg.Stop}}\n",
        "trainer.callbacks.class_path: cannot import nosuchpkg"),
    "a callback that is not a Callback": (
        "trainer: {callbacks: [{class_path: tinyproject.BlobsClassifier}]}\n",
        "trainer.callbacks[0].class_path: tinyproject.BlobsClassifier is not a Lightning "
        "Callback"),
    "a callback's unknown init arg": (
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitr: val_acc}\n",
        "trainer.callbacks[0].init_args.monitr: EarlyStopping.__init__ has no argument "
        "'monitr'; did you mean 'monitor'?"),
    "a logger that is not a Logger": (
        "trainer: {logger: {class_path: lightning.pytorch.callbacks.EarlyStopping}}\n",
        "trainer.logger.class_path: lightning.pytorch.callbacks.early_stopping.EarlyStopping "
        "is not a Lightning Logger"),
    "a logger's unknown init arg": (
        "trainer: {logger: {class_path: lightning.pytorch.loggers.CSVLogger, "
        "init_args: {save_dr: logs}}}\n",
        "trainer.logger.init_args.save_dr: CSVLogger.__init__ has no argument 'save_dr'"),
    "a nested value": ("trainer: {plugins: {a: 1}}\n", "trainer.plugins: give plain numbers"),
    "the default logger": ("trainer: {logger: true}\n", "trainer.logger: true would log into "
                           "each point's own folder, which is not kept"),
}


@pytest.mark.parametrize("section, expected", BAD.values(), ids=BAD.keys())
def test_a_bad_trainer_section_is_one_line_exit_2_and_nothing_written(
        in_tmp: Path, section: str, expected: str) -> None:
    shutil.copy(PROJECT, in_tmp / "tinyproject.py")
    (in_tmp / "sweep.yaml").write_text(
        "name: blobs\nmodel: {class_path: tinyproject.BlobsClassifier}\n"
        "data: {class_path: tinyproject.BlobsData}\nquality: {metric: val_acc, mode: max}\n"
        + section)
    done = cli("run", "sweep.yaml", cwd=in_tmp)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sweep.yaml: "), lines
    assert expected in lines[0], lines[0]
    assert not (in_tmp / "runs").exists()


LOGGED = """\
name: logged
model: {class_path: tinyproject.BlobsClassifier, init_args: {hidden: 8}}
data: {class_path: tinyproject.BlobsData, init_args: {batch_size: 16, count: 64}}
quality: {metric: val_acc, mode: max}
train: {epochs: 3}
energy: {idle_seconds: 0, warmup_steps: 1}
grid: {seed: [0, 1]}
trainer:
  logger:
    - {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: logs}}
    - {class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: tb}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val_acc, mode: max, save_top_k: 1, filename: best}
"""


def test_the_users_loggers_get_a_run_per_point_with_the_energy_of_every_epoch(
        in_tmp: Path) -> None:
    tensorboard = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    specs = expand(sweep_of(in_tmp, LOGGED, PROJECT))
    results = {spec.run_id: run_point(spec) for spec in specs}

    for run_id, result in results.items():
        record = result.record
        assert record["status"] == "ok", record["reason"]
        assert record["train"]["stopped_by"] == "budget"
        # one CSV metrics file per point, named after its run_id
        with open(in_tmp / "logs" / "lightning_logs" / run_id / "metrics.csv") as file:
            rows = [row for row in csv.DictReader(file) if row.get("energy/fit_j")]
        fit_j = [float(row["energy/fit_j"]) for row in rows[:3]]
        assert len(fit_j) == 3 and fit_j == sorted(fit_j) and fit_j[0] > 0  # each epoch end
        hparams = (in_tmp / "logs" / "lightning_logs" / run_id / "hparams.yaml").read_text()
        assert "tinyproject.BlobsClassifier" in hparams
        # the event file TensorBoard reads, with the same energy curve
        events = tensorboard.EventAccumulator(str(in_tmp / "tb" / "lightning_logs" / run_id))
        events.Reload()
        assert [round(e.value, 3) for e in events.Scalars("energy/fit_j")][:3] == [
            round(j, 3) for j in fit_j]
        # the checkpoint is handed back for the sweep folder, never written beside the sweep
        assert record["train"]["checkpoints"] == [f"checkpoints/{run_id}/best.ckpt"]
        assert result.files[f"checkpoints/{run_id}/best.ckpt"][:2] == b"PK"  # a torch zip
    assert not list(in_tmp.glob("**/*.ckpt"))


def test_every_record_says_who_stopped_fit() -> None:
    record = run_point(tiny_spec(steps=3)).record
    assert record["train"]["stopped_by"] == "budget"
    assert record["train"]["stopped_at"] == {"epoch": 0, "batches": 3}


def test_the_report_names_who_stopped_runs_before_their_budget(in_tmp: Path) -> None:
    from greenbench import results
    from greenbench.report import builder, tables
    from tests.helpers import record

    runs = [record("a", seed=0), record("b", seed=1), record("c", width=0.5)]
    for run, by, epoch in zip(runs, ("EarlyStopping", "budget", "budget"), (3, 4, 4),
                              strict=True):
        run["train"] = {"stopped_by": by, "stopped_at": {"epoch": epoch, "batches": 40}}
    frame = results.frame(runs)
    assert frame.set_index("run_id").loc["a", "stopped_by"] == "EarlyStopping"
    table = builder.quality_table(tables.summarise(frame)).set_index("configuration")
    assert table.loc["gan 32-true w=1 f=1", "stopped before its budget"] == (
        "1 of 2: EarlyStopping (epoch 3)")
    assert table.loc["gan 32-true w=0.5 f=1", "stopped before its budget"] == "-"
    every_budget = builder.quality_table(tables.summarise(results.frame(runs[1:])))
    assert "stopped before its budget" not in every_budget  # no column when none stopped


def test_a_baseline_may_name_an_argument_of_the_runs(in_tmp: Path) -> None:
    import json

    from tests.helpers import record

    records = in_tmp / "runs" / "s" / "records"
    records.mkdir(parents=True)
    for name, clip in (("a", None), ("b", 1.0)):
        run = record(name, config={"trainer": {"gradient_clip_val": clip}})
        (records / f"{name}.json").write_text(json.dumps(run))
    done = cli("report", "runs/s", "--baseline", "trainer.gradient_clip_val=1.0", cwd=in_tmp)
    assert done.returncode == 0, done.stderr
    markdown = (in_tmp / "runs" / "s" / "report" / "report.md").read_text()
    assert "gradient\\_clip\\_val" in markdown
    bad = cli("report", "runs/s", "--baseline", "trainer.gradient_clip=1", cwd=in_tmp)
    assert bad.returncode == 2 and "'trainer.gradient_clip' is not a configuration key" in (
        bad.stderr)
