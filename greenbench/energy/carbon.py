"""Grams of CO2 from kilowatt-hours, with the intensity used written down.

The same joules must always give the same grams, so the intensity is fixed before a run and
recorded with it: given explicitly (``intensity_g_per_kwh``), looked up offline for a country in
CodeCarbon's bundled energy-mix table (``country_iso_code``), or, when neither is given, the
world average of 475 g/kWh (IEA 2019, the figure CodeCarbon itself falls back to). Nothing is
fetched from the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from greenbench.errors import UserError

WORLD_AVERAGE_G_PER_KWH = 475.0
JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class CarbonIntensity:
    g_per_kwh: float
    source: str  # how the figure was obtained, in words
    pue: float = 1.0  # power usage effectiveness of the data centre (>= 1)
    country_iso_code: str | None = None

    def footprint(self, joules: float | None) -> dict[str, Any]:
        """The record's ``carbon`` section for ``joules`` of measured or estimated energy."""
        kwh = None if joules is None else joules / JOULES_PER_KWH
        return {
            "kwh": kwh,
            "gco2": None if kwh is None else kwh * self.pue * self.g_per_kwh,
            "intensity_g_per_kwh": self.g_per_kwh,
            "intensity_source": self.source,
            "pue": self.pue,
        }


def resolve_intensity(
    country_iso_code: str | None = None,
    intensity_g_per_kwh: float | None = None,
    pue: float = 1.0,
) -> CarbonIntensity:
    """Fix the carbon intensity for a run; an unknown country is a ``UserError``."""
    if intensity_g_per_kwh is not None and country_iso_code is not None:
        raise UserError("carbon: give country_iso_code or intensity_g_per_kwh, not both")
    if intensity_g_per_kwh is not None:
        return CarbonIntensity(float(intensity_g_per_kwh), "given in the sweep", pue)
    if country_iso_code is None:
        return CarbonIntensity(
            WORLD_AVERAGE_G_PER_KWH, "world average (IEA 2019); no carbon intensity given", pue
        )
    code = country_iso_code.upper()
    mix = energy_mix().get(code)
    if mix is None or mix.get("carbon_intensity") is None:
        raise UserError(
            f"carbon.country_iso_code: {country_iso_code!r} is not a country in CodeCarbon's "
            "energy-mix table (use a 3-letter ISO code such as FRA, USA, DEU)"
        )
    source = f"CodeCarbon energy mix for {mix.get('country_name', code)} ({mix.get('year', '?')})"
    return CarbonIntensity(float(mix["carbon_intensity"]), source, pue, code)


def energy_mix() -> dict[str, dict[str, Any]]:
    """CodeCarbon's bundled per-country electricity mix, read from its package data."""
    from codecarbon.input import DataSource

    return DataSource().get_global_energy_mix_data()
