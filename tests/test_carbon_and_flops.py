"""Grams of CO2 from joules with the intensity written down; FLOPs per training step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from greenbench.energy.carbon import WORLD_AVERAGE_G_PER_KWH, resolve_intensity
from greenbench.errors import UserError
from greenbench.models import build_model
from greenbench.point.flops import StepFlops


def test_world_average_by_default_and_recorded_as_such() -> None:
    intensity = resolve_intensity()
    assert intensity.g_per_kwh == WORLD_AVERAGE_G_PER_KWH == 475.0
    footprint = intensity.footprint(3.6e6)  # one kWh
    assert footprint == {
        "kwh": 1.0, "gco2": 475.0, "intensity_g_per_kwh": 475.0,
        "intensity_source": "world average (IEA 2019); no carbon intensity given", "pue": 1.0,
    }


def test_explicit_intensity_and_pue() -> None:
    footprint = resolve_intensity(intensity_g_per_kwh=56, pue=1.5).footprint(7.2e6)
    assert footprint["gco2"] == pytest.approx(2 * 1.5 * 56)
    assert footprint["intensity_source"] == "given in the sweep"


def test_country_from_codecarbons_bundled_table() -> None:
    intensity = resolve_intensity(country_iso_code="deu")
    assert intensity.country_iso_code == "DEU"
    assert 100 < intensity.g_per_kwh < 1000
    assert "Germany" in intensity.source


def test_unknown_country_and_both_given_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"carbon\.country_iso_code: 'XYZ'"):
        resolve_intensity(country_iso_code="XYZ")
    with pytest.raises(UserError, match="not both"):
        resolve_intensity(country_iso_code="FRA", intensity_g_per_kwh=1)


def test_no_energy_gives_no_grams() -> None:
    assert resolve_intensity().footprint(None)["gco2"] is None


def flops_of_first_step(model_name: str, width: float, precision: str = "32-true") -> int:
    model = build_model(model_name, image_size=16, channels=1, width=width, latent_dim=16,
                        lr=1e-3)
    data = DataLoader(TensorDataset(torch.rand(32, 1, 16, 16) * 2 - 1, torch.zeros(32)),
                      batch_size=16)
    counter = StepFlops()
    L.Trainer(accelerator="cpu", precision=precision, max_steps=2, callbacks=[counter],
              logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, data)
    return counter.flops_per_step


def test_step_flops_count_forward_and_backward_of_the_vae() -> None:
    counted = flops_of_first_step("vae", 1.0)
    model = build_model("vae", image_size=16, channels=1, width=1.0, latent_dim=16, lr=1e-3)
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    with FlopCounterMode(display=False) as reference:
        recon, kl = model.negative_elbo(x)
        (recon + kl).mean().backward()
    assert counted == reference.get_total_flops()


def test_step_flops_are_exact_and_independent_of_precision() -> None:
    full = flops_of_first_step("gan", 1.0)
    assert full == flops_of_first_step("gan", 1.0, "bf16-mixed")
    half = flops_of_first_step("gan", 0.5)
    assert 0.2 < half / full < 0.32  # width 0.5 is about a quarter of the FLOPs
