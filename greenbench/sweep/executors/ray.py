"""Run sweep points as Ray tasks across a cluster, one point per GPU; the driver alone stores.

Each point is one Ray task in a fresh worker process (``max_calls=1``: nothing carries over from
one point to the next). The task runs exactly what the local executor runs, ``python -m
greenbench.point.child`` in its own process, and returns the record and files; the driver (the
``greenbench run`` process) gathers them as tasks finish and writes the store, so resume,
``--force``, atomic records, exit codes and the progress line behave as with the local executor.
greenbench schedules nothing itself: Ray places tasks by the resources they ask for
(``gpus_per_point``, by default one GPU per rank of the point, ``cpus_per_point``). A task whose
worker dies (killed, out of memory) is retried once by Ray, then recorded ``failed`` with the
reason.

Energy attribution: GPU energy is per device and exact. CPU and RAM energy are measured for the
whole node, which points running there at the same time share. An ``Occupancy`` actor counts the
points on each node; every record gets ``node_concurrency``, the most points that shared its
node while it ran, and when that is above 1 its CPU and RAM components are marked
``scope: node_shared``. ``exclusive_node`` asks for a whole node's CPUs per point, so that CPU
and RAM energy is one point's own.

Ray's usage-statistics reporting is switched off before Ray starts: no network calls.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # after switching usage statistics off

from greenbench import environment
from greenbench.energy.meters import NODE_COMPONENTS
from greenbench.errors import UserError
from greenbench.point.ranks import world_size
from greenbench.records import PointResult, RunSpec, failed_record
from greenbench.sweep.executors.local import LocalExecutor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.schema import ExecutorSection

POLL_S = 0.5


@ray.remote(num_cpus=0)
class Occupancy:
    """Points running on each node, and the most that ever ran beside each of them."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, int]] = {}  # node -> run_id -> most seen together
        self.finished: dict[str, int] = {}  # run_id -> most seen together, once it left

    def enter(self, node: str, run_id: str) -> None:
        points = self.active.setdefault(node, {})
        points[run_id] = 0  # a retry of the same point replaces its dead attempt
        for key in points:
            points[key] = max(points[key], len(points))

    def leave(self, node: str, run_id: str) -> None:
        self.finished[run_id] = self.active.get(node, {}).pop(run_id, 1) or 1

    def concurrency(self, run_id: str) -> int:
        """The most points that shared the node while ``run_id`` ran; forgets the point."""
        for points in self.active.values():
            if run_id in points:
                return points.pop(run_id) or 1
        return self.finished.pop(run_id, 1)


def run_point_task(spec: dict[str, Any], occupancy: Any) -> tuple[dict[str, Any], dict, str]:
    """The body of a point's Ray task: the local executor's point process, on this node.

    The task never waits on the occupancy actor: Ray lends a task's CPUs to other tasks while
    it blocks in ``ray.get``, which would let more points onto the node than it has CPUs for.
    The driver asks the actor for the count once the task is done."""
    point = RunSpec.from_dict(spec)
    node = socket.gethostname()
    occupancy.enter.remote(node, point.run_id)
    try:
        result = LocalExecutor(warm=False).run(point)  # one point per fresh worker: no server
    finally:
        occupancy.leave.remote(node, point.run_id)
    return result.record, result.files, node


def attribute(record: dict[str, Any], node: str, concurrency: int) -> None:
    """Record where the point ran and how many points shared the node's CPU and RAM."""
    record.update(executor="ray", node=node, node_concurrency=concurrency)
    if concurrency <= 1 or not record.get("energy"):
        return
    for window in record["energy"]["windows"].values():
        for component in NODE_COMPONENTS:
            window["components"][component]["scope"] = "node_shared"
    record["energy"]["warnings"].append(
        f"{concurrency} points shared this node: its CPU and RAM energy (scope node_shared) "
        "was drawn for all of them, not for this point alone"
    )


class RayExecutor:
    name = "ray"

    def __init__(self, settings: ExecutorSection):
        self.settings = settings

    def run_all(
        self, specs: list[RunSpec], progress: SweepProgress
    ) -> Iterator[tuple[RunSpec, PointResult]]:
        """Submit every point, then yield each result as its task finishes."""
        if not specs:
            return
        started_here = self._connect()
        pending: dict[Any, RunSpec] = {}
        try:
            occupancy = Occupancy.remote()
            task = ray.remote(max_calls=1, max_retries=1, retry_exceptions=False)(
                run_point_task)
            with_gpus = ray.cluster_resources().get("GPU", 0) > 0
            for spec in specs:
                pending[task.options(**self._resources(spec, with_gpus)).remote(
                    spec.to_dict(), occupancy)] = spec
                progress.begin_point(spec)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                if not done:
                    progress.refresh()
                    continue
                spec = pending.pop(done[0])
                yield spec, self._collect(done[0], spec, occupancy)
        finally:
            for ref in pending:  # interrupted: stop what is still queued or running
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()

    def _connect(self) -> bool:
        """Join the cluster, or start Ray on this machine; True when started here."""
        if ray.is_initialized():
            return False
        options = {"include_dashboard": False, "log_to_driver": False,
                   "configure_logging": False}
        try:
            if self.settings.address:
                ray.init(address=self.settings.address, **options)
            else:  # a Ray instance of this machine alone, on the loopback interface
                ray.init(_node_ip_address="127.0.0.1", **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.settings.address or "a local Ray instance"
            raise UserError(f"executor.address: cannot start or join {where} ({error})") from None
        return True

    def _resources(self, spec: RunSpec, with_gpus: bool) -> dict[str, float]:
        """What a point's task asks Ray for: ``gpus_per_point``, by default one GPU per rank
        (``trainer.devices``) where the cluster has GPUs; ``cpus_per_point``, or a node's."""
        gpus = self.settings.gpus_per_point
        if gpus is None:
            gpus = float(world_size(spec.config.get("trainer"))) if with_gpus else 0.0
        cpus = self.settings.cpus_per_point
        if self.settings.exclusive_node:
            cpus = max(node["Resources"].get("CPU", 1) for node in ray.nodes() if node["Alive"])
        return {"num_gpus": gpus, "num_cpus": cpus}

    @staticmethod
    def _collect(ref: Any, spec: RunSpec, occupancy: Any) -> PointResult:
        try:
            record, files, node = ray.get(ref)
        except ray.exceptions.RayError as error:
            ray.get(occupancy.concurrency.remote(spec.run_id))  # forget the dead attempt
            lines = [line for line in str(error).splitlines() if line.strip()]
            why = lines[0] if lines else type(error).__name__
            record = failed_record(spec, f"the point's Ray task failed, retried once: "
                                         f"{type(error).__name__}: {why}",
                                   environment.describe())
            record.update(executor="ray", node=None, node_concurrency=None)
            return PointResult(record)
        attribute(record, node, ray.get(occupancy.concurrency.remote(spec.run_id)))
        return PointResult(record, files)
