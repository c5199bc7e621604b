"""The devices of a point on this node: whether the node has the GPUs a sweep's points ask
for (checked before any point runs), which of them a point gets, and which points measure the
same devices (and so may share an idle baseline).

A point with ``trainer: {devices: N}`` runs as N processes on one node, one device each
(``point.ranks``). On GPUs (``accelerator: gpu`` or ``cuda``, or ``auto`` on a node that has
GPUs) the node must show the point N of them: GPUs are counted through NVML as CUDA would see
them (``CUDA_VISIBLE_DEVICES``), without touching CUDA. A CPU point may have any number of ranks,
each a process sharing the node's cores (Lightning gives each its share of threads).
"""

from __future__ import annotations

import os

from greenbench.errors import UserError
from greenbench.point.ranks import world_size
from greenbench.records import TRAINER_KEY, RunSpec

GPU_ACCELERATORS = ("gpu", "cuda")


def check_devices(specs: list[RunSpec], gpus: int | None = None) -> None:
    """Raise ``UserError`` naming ``trainer.devices`` when a point asks for more GPUs than this
    node shows (``gpus``: how many it shows; default: as NVML counts them)."""
    wanted = [devices_key(spec) for spec in specs]
    if not any(devices > 1 or accelerator in GPU_ACCELERATORS for accelerator, devices in wanted):
        return
    gpus = visible_gpus() if gpus is None else gpus
    for spec, (_, devices) in zip(specs, wanted, strict=True):
        if gpu_point(spec, gpus) and devices > gpus:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
            raise UserError(f"trainer.devices: a point asks for {devices} GPU(s) and this node "
                            f"shows {gpus}{where}; ask for at most {gpus}, or run the sweep "
                            "where there are more")


def gpu_point(spec: RunSpec, gpus: int) -> bool:
    """Whether ``spec`` trains on GPUs on a node that shows ``gpus`` of them."""
    accelerator = (spec.config.get(TRAINER_KEY) or {}).get("accelerator", "auto")
    return accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus > 0)


def cuda_visible_devices(spec: RunSpec, gpus: int, shown: str | None) -> str | None:
    """What ``CUDA_VISIBLE_DEVICES`` a point gets: the first ``trainer.devices`` of the GPUs
    the node shows (``shown``: the parent's ``CUDA_VISIBLE_DEVICES``, or None for all of them),
    so that its ranks see their own GPUs and no other; None for a point that is not on GPUs."""
    if not gpu_point(spec, gpus):
        return None
    devices = world_size(spec.config.get(TRAINER_KEY))
    entries = [entry.strip() for entry in shown.split(",")] if shown is not None else \
        [str(index) for index in range(gpus)]
    return ",".join(entries[:devices])


def devices_key(spec: RunSpec) -> tuple[str, int]:
    """What a point measures an idle baseline of: its accelerator and how many devices."""
    trainer = spec.config.get(TRAINER_KEY) or {}
    return str(trainer.get("accelerator", "auto")), world_size(trainer)


def visible_gpus() -> int:
    """How many GPUs CUDA would show a process here; 0 where NVML cannot say."""
    from greenbench.energy.nvml_devices import (
        NvmlUnavailable,
        initialise_nvml,
        parse_visible_devices,
    )

    try:
        nv = initialise_nvml()
    except NvmlUnavailable:
        return 0
    try:
        count = int(nv.nvmlDeviceGetCount())
    except Exception:  # NVML answers, but not this
        count = 0
    finally:
        nv.nvmlShutdown()
    visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    return count if visible is None else min(count, len(visible))
