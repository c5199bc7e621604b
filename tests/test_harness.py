"""One point in this process: the real Trainer on digits, both models, several precisions."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch

from greenbench.point.run import precision_unavailable, run_point
from greenbench.records import RunSpec, to_json
from tests.helpers import TRAIN_COUNT, idx_bytes, tiny_spec, write_idx_dataset

RECORD_KEYS = [
    "schema", "run_id", "status", "reason", "sweep", "config", "model", "data", "timings", "train",
    "flops_per_step", "energy", "carbon", "quality", "quality_curve", "generation", "executor",
    "node", "node_concurrency", "environment", "created_at",
]


@pytest.mark.parametrize("model", ["gan", "vae"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "64-true", "bf16-true"])
def test_point_trains_and_records(model: str, precision: str) -> None:
    spec = tiny_spec(model=model, precision=precision, lr=1e-3)
    result = run_point(spec)
    record = result.record

    assert record["status"] == "ok", record["reason"]
    assert list(record) == RECORD_KEYS
    assert record["run_id"] == spec.run_id
    assert record["config"] == spec.config
    assert record["train"]["batches"] == 4  # the steps budget, exactly
    assert record["train"]["samples_seen"] == 4 * 32
    steps_per_batch = 2 if model == "gan" else 1  # the GAN steps two optimizers per batch
    assert record["train"]["optimizer_steps"] == 4 * steps_per_batch
    losses = record["train"]["final_losses"]
    assert set(losses) == ({"d_loss", "g_loss"} if model == "gan" else {"loss", "recon_nll", "kl"})
    assert all(isinstance(v, float) for v in losses.values())
    assert record["data"]["train_images"] == 1437 and record["data"]["test_images"] == 360
    assert set(record["timings"]) == {"setup_s", "extractor_s", "trainer_fit_s", "eval_s"}
    assert record["environment"]["accelerator"] == "cpu"
    assert record["environment"]["torch"] == torch.__version__
    assert_cpu_energy_record(record)
    png = result.files[f"images/{spec.run_id}.png"]
    assert png.startswith(b"\x89PNG")
    assert json.loads(to_json(record)) == record


def test_epochs_budget_runs_whole_epochs() -> None:
    spec = tiny_spec(model="vae", steps=None, epochs=2, data_fraction=0.1)
    record = run_point(spec).record
    assert record["status"] == "ok", record["reason"]
    assert record["data"]["train_images"] == 143
    assert record["train"]["batches"] == 2 * (143 // 32)  # drop_last: 4 full batches an epoch


def test_16_mixed_on_cpu_is_skipped_not_silently_run_as_bf16() -> None:
    record = run_point(tiny_spec(precision="16-mixed")).record
    assert record["status"] == "skipped"
    assert "16-mixed cannot run on cpu" in record["reason"]
    assert "bf16-mixed" in record["reason"]
    assert record["train"] is None  # nothing trained


def test_precision_check_without_replacement() -> None:
    assert precision_unavailable("32-true", "32-true", torch.device("cpu")) is None
    assert "Lightning would run bf16-mixed" in precision_unavailable(
        "16-mixed", "bf16-mixed", torch.device("cpu")
    )


def test_absurd_learning_rate_diverges_and_stops_at_once() -> None:
    spec = tiny_spec(model="vae", lr=1e3, steps=50)
    result = run_point(spec)
    record = result.record
    assert record["status"] == "diverged"
    assert "became nan at step" in record["reason"]
    step = int(record["reason"].rsplit(" ", 1)[1])
    assert record["train"]["batches"] == step  # stopped right after the bad step, not at 50
    assert f"images/{spec.run_id}.png" not in result.files
    assert json.loads(to_json(record))["status"] == "diverged"  # NaN losses serialise as null


def test_failure_inside_the_point_is_a_failed_record(tmp_path) -> None:
    # An MNIST folder whose label file passes the cheap header check made when the sweep is
    # validated, but holds a label of 12: loading fails inside the point, which must come back
    # as a failed record carrying the error's last line, not as an exception.
    write_idx_dataset(tmp_path, "mnist")
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.full(TRAIN_COUNT, 12, dtype=np.uint8)))
    spec = tiny_spec(root=str(tmp_path), dataset="mnist", batch_size=4)

    record = run_point(spec).record

    assert record["status"] == "failed"
    assert record["reason"].startswith("UserError: dataset.root: ")
    assert "labels outside 0..9" in record["reason"]
    assert record["environment"]["python"]  # filled even though the point never trained


def assert_cpu_energy_record(record: dict) -> None:
    """What every ok record says about energy on a CPU without RAPL: estimates, labelled."""
    windows = record["energy"]["windows"]
    assert list(windows) == ["idle", "warmup", "train", "eval", "generate", "fit", "total"]
    for name, window in windows.items():
        gpu, cpu, ram = (window["components"][c] for c in ("gpu", "cpu", "ram"))
        assert gpu == {"joules": None, "source": "unavailable", "measured": False,
                       "reason": "no GPU in use"}, name
        assert cpu["joules"] > 0 and ram["joules"] > 0, name
        assert cpu["source"] in {"codecarbon_cpu_load_estimate", "rapl"}, name
        assert ram["source"] == "codecarbon_ram_estimate" and ram["measured"] is False, name
        assert window["measured"] is False and window["valid"] is True, name
        assert window["total_j"] == cpu["joules"] + ram["joules"], name
        assert window["duration_s"] > 0, name
        assert isinstance(window["reliable"], bool), name  # a tiny point's windows are short:
        assert window["reliable"] or "periods of CodeCarbonMeter" in window["reliability_reason"]
    total, fit = windows["total"], windows["fit"]
    parts = [windows[w] for w in ("warmup", "train", "eval", "generate")]
    assert total["duration_s"] == pytest.approx(sum(w["duration_s"] for w in parts))
    assert total["total_j"] == pytest.approx(sum(w["total_j"] for w in parts))
    assert fit["total_j"] == pytest.approx(windows["warmup"]["total_j"] + windows["train"][
        "total_j"])
    assert total["samples"] == fit["samples"]
    assert total["samples"] == windows["warmup"]["samples"] + windows["train"]["samples"]
    assert total["samples"] == record["train"]["samples_seen"]
    assert windows["eval"]["samples"] == 0 and windows["eval"]["j_per_1k_samples"] is None
    generation = record["generation"]
    assert generation["images"] == 64 and generation["batch_size"] == 32  # tests/helpers.py
    assert generation["batches"] == 2
    assert generation["j_per_image"] == pytest.approx(
        windows["generate"]["total_j"] / generation["images"])
    assert generation["images_per_s"] > 0 and generation["ms_per_batch"] > 0
    assert record["energy"]["meters"]["CodeCarbonMeter"]["period_s"] == 1.0
    assert windows["train"]["j_per_1k_samples"] == pytest.approx(
        1000 * windows["train"]["total_j"] / windows["train"]["samples"]
    )
    carbon = record["carbon"]
    assert carbon["kwh"] == pytest.approx(total["total_j"] / 3.6e6)
    assert carbon["gco2"] == pytest.approx(carbon["kwh"] * carbon["pue"] * carbon[
        "intensity_g_per_kwh"])
    assert record["flops_per_step"] > 0


def test_energy_on_cpu_is_estimated_labelled_and_measured_offline(monkeypatch) -> None:
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("greenbench must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    spec = tiny_spec(model="vae", steps=6)

    result = run_point(spec)

    record = result.record
    assert record["status"] == "ok", record["reason"]
    assert_cpu_energy_record(record)
    assert record["carbon"]["intensity_g_per_kwh"] == 475.0
    assert "world average" in record["carbon"]["intensity_source"]
    assert record["energy"]["settings"] == {"idle_seconds": 0.3, "warmup_steps": 2,
                                            "sample_hz": 10.0, "min_window_periods": 10,
                                            "cooldown_s": 0.0}
    assert record["energy"]["windows"]["warmup"]["samples"] == 2 * 32  # 2 training batches
    csv_text = result.files[f"codecarbon/{spec.run_id}.csv"].decode()
    assert csv_text.startswith("timestamp,project_name,run_id,")  # CodeCarbon's own format
    assert "cpu_energy" in csv_text.splitlines()[0]
    assert attempts == []


def test_carbon_from_a_country_uses_codecarbons_offline_table() -> None:
    spec = tiny_spec(model="vae", steps=3)
    spec = RunSpec(spec.run_id, spec.sweep, spec.config, None, spec.energy,
                   {"country_iso_code": "FRA", "intensity_g_per_kwh": None, "pue": 1.2})
    record = run_point(spec).record
    carbon = record["carbon"]
    assert carbon["intensity_g_per_kwh"] == pytest.approx(56.039)
    assert "France" in carbon["intensity_source"]
    assert carbon["gco2"] == pytest.approx(carbon["kwh"] * 1.2 * 56.039)


def test_a_point_that_never_leaves_warm_up_has_training_energy_but_no_steady_state() -> None:
    from greenbench import results
    from greenbench.report import notes, tables

    spec = tiny_spec(steps=4)
    spec = RunSpec(spec.run_id, spec.sweep, spec.config, None,
                   {**spec.energy, "warmup_steps": 10}, spec.carbon, spec.generate)
    record = run_point(spec).record
    assert record["status"] == "ok", record["reason"]
    windows = record["energy"]["windows"]
    assert windows["train"]["total_j"] is None and windows["train"]["j_per_1k_samples"] is None
    assert "ended in warm-up" in windows["train"]["reason"]
    assert windows["fit"]["total_j"] > 0 and windows["fit"]["samples"] == 4 * 32
    assert any("never left warm-up" in w for w in record["energy"]["warnings"])

    frame = results.frame([record])
    assert frame.loc[0, "energy_fit_j"] > 0 and bool(frame.loc[0, "warmup_only"])
    assert math.isnan(frame.loc[0, "energy_train_j"]) and math.isnan(
        frame.loc[0, "j_per_1k_samples"])
    summary = tables.summarise(frame)
    assert summary.loc[0, "energy_fit_j_mean"] == pytest.approx(frame.loc[0, "energy_fit_j"])
    assert any("never left warm-up" in line for line in notes.notes(frame, summary))
