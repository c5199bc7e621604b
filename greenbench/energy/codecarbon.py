"""CPU and RAM energy from CodeCarbon, behind greenbench's meter interface.

CodeCarbon's tracker takes some 35 arguments, merges config files and environment variables,
and swallows its own exceptions. This adapter is the one place greenbench touches it:

* only ``OfflineEmissionsTracker``, with every setting that changes a number passed explicitly,
  and built blind to CodeCarbon's own configuration: its ``CODECARBON_*`` environment variables
  and ``.codecarbon.config`` files (in ``$HOME`` and the working directory) are hidden from it
  while it is constructed, so ``CODECARBON_FORCE_CPU_POWER=5000`` or a ``force_ram_power`` in a
  config file cannot change what is measured; ``details()`` names what was ignored. No API, no
  network, machine tracking mode, GPU tracking off (GPU energy comes from NVML; CodeCarbon's GPU
  numbers are never read, so nothing is counted twice);
* cumulative readings are built from CodeCarbon's task API: every ``read()`` closes one task and
  opens the next, so each reading is measured at the moment it is asked for, and short windows
  are not empty;
* the method CodeCarbon chose is named in the source: ``rapl`` where it can read the RAPL
  counters, its CPU-load x TDP estimate (``codecarbon_cpu_load_estimate``) or a constant share
  of TDP otherwise; RAM is always CodeCarbon's estimate from the memory installed;
* failures become unavailable components or faults with a reason, never silent zeros.

CodeCarbon writes its own CSV files to ``output_dir``: its run row and one row per segment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenbench.energy.carbon import JOULES_PER_KWH, CarbonIntensity
from greenbench.energy.meters import (
    CODECARBON_CPU_CONSTANT,
    CODECARBON_CPU_LOAD,
    CODECARBON_RAM,
    CPU,
    RAM,
    RAPL,
    Meter,
    Reading,
)

CSV_NAME = "emissions.csv"
CONFIG_FILE_NAME = ".codecarbon.config"  # CodeCarbon reads it from $HOME and the working folder
ENV_PREFIX = "codecarbon_"  # CodeCarbon reads every variable so named, in any case
_CPU_SOURCES = {
    "intel_rapl": RAPL,
    "cpu_load": CODECARBON_CPU_LOAD,
    "constant": CODECARBON_CPU_CONSTANT,
}


class CodeCarbonMeter(Meter):
    components = (CPU, RAM)

    def __init__(
        self,
        output_dir: str | Path,
        carbon: CarbonIntensity,
        project_name: str = "greenbench",
        measure_power_secs: float = 1.0,
    ):
        self.output_dir = Path(output_dir)
        self.settings: dict[str, Any] = {
            "project_name": project_name,
            "measure_power_secs": measure_power_secs,
            "api_call_interval": -1,
            "output_dir": str(self.output_dir),
            "output_file": CSV_NAME,
            "output_methods": ["csv"],  # CodeCarbon's own CSV file, nothing else
            "emissions_endpoint": None,
            "gpu_ids": [],
            "tracking_mode": "machine",
            "log_level": "error",
            "on_csv_write": "append",
            "allow_multiple_runs": True,
            "pue": carbon.pue,
            "force_carbon_intensity_g_co2e_kwh": carbon.g_per_kwh,
            "country_iso_code": carbon.country_iso_code,
            # What CodeCarbon would otherwise take from its config files or environment:
            "force_cpu_power": None,
            "force_ram_power": None,
            "force_mode_cpu_load": False,
            "rapl_include_dram": False,
            "rapl_prefer_psys": False,
            "wue": 0.0,
            "region": None,
            "cloud_provider": None,
            "cloud_region": None,
            "country_2letter_iso_code": None,
        }
        self.ignored: list[str] = []  # CodeCarbon settings found around us, and not used
        self._tracker: Any = None
        self._joules = {CPU: 0.0, RAM: 0.0}
        self._sources = {CPU: CODECARBON_CPU_LOAD, RAM: CODECARBON_RAM}
        self._faults = 0
        self._fault: str | None = None
        self._unavailable: str | None = None
        self._segments = 0

    @property
    def period_s(self) -> float:
        return float(self.settings["measure_power_secs"])  # CodeCarbon's measuring interval

    def start(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.output_methods.base_output import OutputMethod

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            settings = {**self.settings, "output_methods": [OutputMethod.CSV]}
            with self._blind_to_ambient_config():
                self._tracker = OfflineEmissionsTracker(**settings)
            self._tracker.start()
            if getattr(self._tracker, "_start_time", None) is None:
                raise RuntimeError("CodeCarbon's tracker did not start (see the log)")
            self._sources[CPU] = self._cpu_source()
            self._open_segment()
        except Exception as error:  # any failure makes the meter unavailable
            self._unavailable = f"CodeCarbon unavailable: {type(error).__name__}: {error}"
            self._tracker = None

    def read(self) -> dict[str, Reading]:
        if self._tracker is None:
            why = self._unavailable or "CodeCarbon meter not started"
            return {component: Reading.unavailable(why) for component in self.components}
        self._close_segment()
        self._open_segment()
        return {
            component: Reading(self._joules[component], self._sources[component],
                               self._faults, self._fault)
            for component in self.components
        }

    def stop(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        try:
            tracker.stop_task()
            tracker.stop()  # writes CodeCarbon's CSV row
        except Exception:  # stopping must never fail a run
            pass

    def csv_files(self) -> dict[str, Path]:
        """CodeCarbon's own CSV files once stopped: ``run`` (its run row) and ``tasks`` (one
        row per segment between two readings), where they exist."""
        files = {"run": self.output_dir / CSV_NAME}
        tasks = sorted(self.output_dir.glob("emissions_base_*.csv"))
        if tasks:
            files["tasks"] = tasks[-1]
        return {kind: path for kind, path in files.items() if path.is_file()}

    def details(self) -> dict[str, Any]:
        from importlib import metadata

        try:
            version = metadata.version("codecarbon")
        except metadata.PackageNotFoundError:
            version = None
        return {
            "codecarbon_version": version,
            "period_s": self.period_s,
            "cpu_source": self._sources[CPU],
            "ram_source": self._sources[RAM],
            "settings": {k: v for k, v in self.settings.items() if k != "output_dir"},
            "ignored_config": list(self.ignored),
            "unavailable": self._unavailable,
        }

    @contextlib.contextmanager
    def _blind_to_ambient_config(self) -> Iterator[None]:
        """Hide CodeCarbon's environment variables and config files from its constructor (the
        one place it reads them), noting what there was; restore the environment after."""
        from codecarbon import emissions_tracker

        found = [str(folder / CONFIG_FILE_NAME) for folder in (Path.home(), Path.cwd())
                 if (folder / CONFIG_FILE_NAME).is_file()]
        hidden = {k: v for k, v in os.environ.items() if k.lower().startswith(ENV_PREFIX)}
        self.ignored = [*found, *sorted(hidden)]
        for key in hidden:
            del os.environ[key]
        reader = emissions_tracker.get_hierarchical_config
        emissions_tracker.get_hierarchical_config = dict  # no file, no variable: {}
        try:
            yield
        finally:
            emissions_tracker.get_hierarchical_config = reader
            os.environ.update(hidden)

    def _cpu_source(self) -> str:
        for hardware in getattr(self._tracker, "_hardware", []):
            mode = getattr(hardware, "_mode", None)
            if type(hardware).__name__ == "CPU" and mode is not None:
                return _CPU_SOURCES.get(mode, f"codecarbon_{mode}")
        return CODECARBON_CPU_LOAD

    def _open_segment(self) -> None:
        self._segments += 1
        self._tracker.start_task(f"segment-{self._segments}")

    def _close_segment(self) -> None:
        try:
            data = self._tracker.stop_task()
        except Exception as error:
            data, why = None, f"{type(error).__name__}: {error}"
        else:
            why = "CodeCarbon returned no measurement"
        if data is None:
            self._faults += 1
            self._fault = f"CodeCarbon: {why}"
            return
        self._joules[CPU] += data.cpu_energy * JOULES_PER_KWH
        self._joules[RAM] += data.ram_energy * JOULES_PER_KWH
