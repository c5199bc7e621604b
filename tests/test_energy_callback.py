"""EnergyCallback on the real Trainer: a user's own LightningModule, CodeCarbon for real."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from greenbench import EnergyCallback
from greenbench.energy.carbon import resolve_intensity
from greenbench.energy.codecarbon import CodeCarbonMeter
from greenbench.energy.meters import Meter, Reading

README = Path(__file__).resolve().parent.parent / "README.md"


class Regressor(L.LightningModule):
    """Not one of greenbench's models: the callback must work on anything."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(batches: int = 20, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batches * batch_size, 16, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def trainer(callbacks, logger=False, max_epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, callbacks=callbacks, logger=logger,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )


class CountingMeter(Meter):
    """A real meter, its reads counted."""

    def __init__(self, meter: Meter) -> None:
        self.meter, self.components, self.reads = meter, meter.components, 0

    def start(self) -> None:
        self.meter.start()

    def read(self) -> dict[str, Reading]:
        self.reads += 1
        return self.meter.read()

    def stop(self) -> None:
        self.meter.stop()


def test_readme_snippet_runs_as_written(workdir: Path) -> None:  # the Trainer writes logs here
    text = README.read_text()
    section = text.split("## Measure your own LightningModule", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 10
    evaluated = []
    namespace = {
        "model": Regressor(),
        "train_dataloaders": loader(),
        "evaluate": lambda model: evaluated.append(model(torch.zeros(4, 16)).shape),
    }
    exec(compile(snippet, str(README), "exec"), namespace)  # our own README
    energy = namespace["energy"]
    windows = energy.result()["windows"]
    assert evaluated == [torch.Size([4, 1])]
    assert windows["idle"]["duration_s"] == pytest.approx(5.0, abs=0.5)  # the default baseline
    assert windows["train"]["total_j"] > 0 and windows["eval"]["total_j"] > 0
    assert windows["warmup"]["samples"] == 10 * 8  # 10 optimizer steps of 8 samples
    assert windows["train"]["samples"] == 10 * 8


def test_windows_meter_reads_and_loggers(tmp_path: Path) -> None:
    meter = CountingMeter(CodeCarbonMeter(tmp_path / "cc", resolve_intensity()))
    energy = EnergyCallback(idle_seconds=0.2, warmup_steps=3, meters=[meter])
    logger = CSVLogger(tmp_path, name="logs")
    fit = trainer([energy], logger=logger, max_epochs=2)

    fit.fit(Regressor(), loader(batches=25))
    reads_after_fit = meter.reads
    with energy.eval_window():
        torch.randn(256, 256) @ torch.randn(256, 256)
    result = energy.result()

    # start, idle, warmup, train, fit end, and one at each epoch end for the logger's
    # energy/fit_j: the same for 50 batches as for 5, never one per batch
    assert reads_after_fit == 5 + 2
    assert meter.reads == 7 + 3  # eval in and out, and stop
    windows = result["windows"]
    assert windows["warmup"]["samples"] == 3 * 8
    assert windows["train"]["samples"] == (50 - 3) * 8
    assert windows["total"]["samples"] == 50 * 8
    assert windows["train"]["components"]["gpu"]["source"] == "unavailable"
    assert result is energy.result()  # stable once stopped
    logger.finalize("success")
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").open()))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"energy/idle_j", "energy/warmup_j", "energy/train_j", "energy/eval_j",
            "energy/total_j", "energy/fit_net_j"} <= logged
    per_epoch = [float(row["energy/fit_j"]) for row in rows if row.get("energy/fit_j")]
    assert len(per_epoch) >= 2 and per_epoch[:2] == sorted(per_epoch[:2])


def test_evaluation_during_fit_pauses_training(tmp_path: Path) -> None:
    energy = EnergyCallback(idle_seconds=0, warmup_steps=0, codecarbon_dir=tmp_path)

    class EvaluateEachEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            with energy.eval_window():
                pl_module(torch.zeros(8, 16))

    fit = trainer([energy, EvaluateEachEpoch()], max_epochs=3)
    fit.fit(Regressor(), loader())
    windows = energy.result()["windows"]
    assert windows["eval"]["duration_s"] > 0 and windows["eval"]["samples"] == 0
    assert windows["train"]["samples"] == 3 * 20 * 8
    assert windows["warmup"]["duration_s"] == 0.0  # no warm-up asked for
    assert windows["idle"]["total_j"] is None or windows["idle"]["duration_s"] == 0.0
    assert energy.result()["idle_power_w"] is None  # no baseline, so no net energy
    assert windows["train"]["net_j"] is None
    assert list(energy.codecarbon_csv_files()) == ["run", "tasks"]


def test_eval_window_outside_fit_is_an_error() -> None:
    energy = EnergyCallback()
    with pytest.raises(RuntimeError, match="eval_window"), energy.eval_window():
        pass
    with pytest.raises(RuntimeError, match="result"):
        energy.result()


def test_a_failed_fit_stops_the_meters(tmp_path: Path) -> None:
    meter = CountingMeter(CodeCarbonMeter(tmp_path, resolve_intensity()))
    energy = EnergyCallback(idle_seconds=0, meters=[meter])

    class Broken(Regressor):
        def training_step(self, batch, batch_idx):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        trainer([energy]).fit(Broken(), loader())
    assert not energy.monitor.running


@pytest.mark.parametrize("local_rank", [0, 1])
def test_node_level_components_are_measured_once_per_node(local_rank: int, tmp_path) -> None:
    # Under DDP every process has a callback; CPU and RAM belong to the node, so only local
    # rank 0 measures them, and the others say where the figures are. GPU energy is per device.
    energy = EnergyCallback(codecarbon_dir=tmp_path)
    trainer = SimpleNamespace(local_rank=local_rank,
                              strategy=SimpleNamespace(root_device=torch.device("cpu")))
    meters = energy._default_meters(trainer)
    readings = {}
    for meter in meters:
        meter.start()
        readings.update(meter.read())
        meter.stop()
    assert readings["gpu"].fault == "no GPU in use"
    if local_rank == 0:
        assert readings["cpu"].joules is not None and readings["ram"].joules is not None
    else:
        assert readings["cpu"].source == readings["ram"].source == "unavailable"
        assert readings["cpu"].fault == "node-level: measured by the node's local rank 0"


class TwoOptimizers(Regressor):
    """Two optimizer steps per batch, as a GAN takes: warm-up still counts batches."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        for optimizer in self.optimizers():
            loss = nn.functional.mse_loss(self(x), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.parameters(), lr=0.01) for _ in range(2)]


def test_warm_up_counts_training_batches_not_optimizer_steps(workdir: Path) -> None:
    energy = EnergyCallback(idle_seconds=0.2, warmup_steps=4)
    fit = trainer([energy])
    fit.fit(TwoOptimizers(), loader(batches=10))
    windows = energy.result()["windows"]
    assert fit.global_step == 20  # two optimizer steps per batch
    assert windows["warmup"]["samples"] == 4 * 8 and windows["train"]["samples"] == 6 * 8
    assert windows["fit"]["samples"] == 10 * 8


def test_one_callback_two_fits_and_every_logger_gets_every_window(workdir: Path) -> None:
    energy = EnergyCallback(idle_seconds=0.2, warmup_steps=2)
    trainer([energy]).fit(Regressor(), loader(batches=5))
    first = energy.result()
    logger = CSVLogger(workdir, name="second")
    trainer([energy], logger=logger).fit(Regressor(), loader(batches=15))
    with energy.eval_window():
        torch.randn(256, 256) @ torch.randn(256, 256)
    second = energy.result()
    assert second is not first
    assert first["windows"]["fit"]["samples"] == 5 * 8
    assert second["windows"]["fit"]["samples"] == 15 * 8
    assert [r["windows"]["fit"]["samples"] for r in energy.results()] == [40, 120]
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        columns = set(next(csv.reader(file)))
    assert {"energy/fit_j", "energy/eval_j", "energy/total_j"} <= columns


def test_validate_after_fit_is_measured_as_eval(workdir: Path) -> None:
    class Validated(Regressor):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self(x), y))

    energy = EnergyCallback(idle_seconds=0.2, warmup_steps=2)
    fit = trainer([energy])
    model = Validated()
    fit.fit(model, loader(batches=5))
    fit.validate(model, loader(batches=20), verbose=False)
    windows = energy.result()["windows"]
    assert windows["eval"]["duration_s"] > 0 and windows["eval"]["total_j"] > 0
    with pytest.warns(UserWarning, match=r"trainer.validate\(\) is not measured"):
        fit.validate(model, loader(batches=2), verbose=False)  # result() closed the measurement


class CoolingGpu(Meter):
    """A GPU meter whose temperature falls by 3 degrees each time it is read."""

    components = ("gpu",)

    def __init__(self, temperatures: list[float]) -> None:
        self.temperatures_c = list(temperatures)

    def start(self) -> None:
        pass

    def read(self) -> dict[str, Reading]:
        return {"gpu": Reading(0.0, "nvml_energy_counter")}

    def stop(self) -> None:
        pass

    def temperatures(self) -> dict[str, float]:
        now = self.temperatures_c.pop(0) if len(self.temperatures_c) > 1 else self.temperatures_c[0]
        return {"cuda:0": now}


def test_cool_down_waits_for_the_gpu_to_reach_the_sweep_start_temperature(
    workdir: Path,
) -> None:
    gpu = CoolingGpu([52.0, 49.0, 46.0, 43.0, 40.0])
    energy = EnergyCallback(idle_seconds=0, warmup_steps=1, meters=[gpu], cooldown_s=30,
                            reference_temperature_c=40.0)
    trainer([energy]).fit(Regressor(), loader(batches=3))
    cooldown = energy.result()["cooldown"]
    assert cooldown["reached"] is True and cooldown["start_c"] == 52.0
    assert cooldown["end_c"] == 43.0 and cooldown["reference_c"] == 40.0  # within 3 degrees
    assert 1.0 <= cooldown["waited_s"] < 10


def test_cool_down_gives_up_after_cooldown_s_and_says_so(workdir: Path) -> None:
    energy = EnergyCallback(idle_seconds=0, warmup_steps=1, meters=[CoolingGpu([80.0])],
                            cooldown_s=1.0, reference_temperature_c=40.0)
    trainer([energy]).fit(Regressor(), loader(batches=3))
    cooldown = energy.result()["cooldown"]
    assert cooldown["reached"] is False and cooldown["end_c"] == 80.0
    assert 1.0 <= cooldown["waited_s"] < 3
