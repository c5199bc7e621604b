"""Running a sweep: plan its points, skip what is recorded, run the rest, store each result.

The runner is the only writer of a sweep's folder. It asks an executor to run one point at a
time and stores what comes back (files first, then the record, so a record's presence means its
point is complete). A point recorded ``ok``, ``skipped`` or ``diverged`` is not run again unless
``force`` is set; a ``failed`` one is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from greenbench.errors import UserError
from greenbench.records import FAILED, FINAL, PointResult, RunSpec, to_json
from greenbench.store import SweepStore
from greenbench.sweep import classes
from greenbench.sweep.devices import check_devices
from greenbench.sweep.executors import Executor
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.schema import Sweep, expand


@dataclass(frozen=True)
class SweepOutcome:
    directory: Path
    statuses: dict[str, str]  # run_id -> status, for every point of the sweep
    ran: int  # points run by this invocation

    @property
    def counts(self) -> Counter:
        return Counter(self.statuses.values())

    @property
    def failed(self) -> bool:
        return FAILED in self.statuses.values()


@dataclass(frozen=True)
class Plan:
    specs: list[RunSpec]  # every point of the sweep
    to_run: list[RunSpec]  # those this invocation runs
    records: dict[str, dict]  # what is stored already, by run_id
    unreadable: list[tuple[Path, str]]  # files in records/ that are not records, and why


def plan(sweep: Sweep, force: bool = False) -> Plan:
    """Which points of ``sweep`` are recorded and which would run now. Reads, writes nothing."""
    specs = expand(sweep)
    records, unreadable = SweepStore(sweep.directory).read_records()
    to_run = [s for s in specs if force or records.get(s.run_id, {}).get("status") not in FINAL]
    return Plan(specs, to_run, records, unreadable)


def run_sweep(
    sweep: Sweep, executor: Executor, progress: SweepProgress, force: bool = False
) -> SweepOutcome:
    """Run every point of ``sweep`` that is not recorded yet; returns each point's status.

    A result that cannot be stored (disk full, a folder made read-only) is set aside in the
    folder's ``.tmp/pending/`` where possible, and the run stops with a ``UserError`` naming the
    path and the cause; the next run stores what was set aside instead of training it again.
    """
    store = SweepStore(sweep.directory)
    if executor.name == "local":  # Ray places points on nodes with the GPUs they ask for
        check_devices(expand(sweep))
    with store.open_for_writing():
        with _storing(store.directory):
            store.write_sweep(sweep.resolved_yaml())
            kept = store.store_pending()
        if kept:
            progress.note(f"stored {len(kept)} finished point(s) an earlier run had set aside")
        points = plan(sweep, force)
        for path, why in points.unreadable:
            progress.note(f"warning: {path} is not a record this greenbench reads ({why}); "
                          "its point runs again and replaces it")
        for line in changed_sources(sweep, points.records):
            progress.note(f"warning: {line}")
        statuses = {
            s.run_id: points.records[s.run_id]["status"]
            for s in points.specs
            if s.run_id in points.records
        }
        progress.start(sweep.name, str(store.directory), len(points.specs), len(points.to_run))
        with closing(executor.run_all(points.to_run, progress)) as finished:
            for spec, result in finished:
                _store(store, spec, result)
                statuses[spec.run_id] = result.record["status"]
                progress.end_point(spec, result.record)
    return SweepOutcome(store.directory, statuses, len(points.to_run))


def changed_sources(sweep: Sweep, records: dict[str, dict]) -> list[str]:
    """One line per class of ``sweep`` whose source file differs from the one recorded points
    were trained with (run_ids hash class paths and init args, not file contents)."""
    if sweep.model_class is None and sweep.data is None:
        return []
    digests = classes.source_digests(sweep)  # by the class paths the sweep names
    stale: Counter = Counter()
    for record in records.values():
        config = record.get("config") if isinstance(record.get("config"), dict) else {}
        for section, key in (("model", "model"), ("data", "dataset")):
            # the sweep's class path (a re-export, mypkg.Model) is the config's; the record's
            # model section names where the class is defined (mypkg.models.Model)
            recorded, named = record.get(section), config.get(key)
            if isinstance(recorded, dict) and named in digests and \
                    recorded.get("source_sha256") != digests[named]:
                stale[named] += 1
    return [f"the source of {path} changed since {count} recorded point(s) ran; they are kept "
            "as they are (--force runs them again)" for path, count in stale.items()]


def _store(store: SweepStore, spec: RunSpec, result: PointResult) -> None:
    record = to_json(result.record)
    try:
        store.write_result(spec.run_id, record, result.files)
    except OSError as error:
        where = error.filename or store.directory
        try:
            kept = store.keep_pending(spec.run_id, record, result.files)
        except OSError:
            fate = "the result could not be set aside either: the point runs again next time"
        else:
            fate = f"the result is kept in {kept}; the next run stores it without training"
        raise UserError(f"{where}: cannot store point {spec.run_id} ({_cause(error)}); "
                        f"{fate}") from None


@contextmanager
def _storing(directory: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise UserError(f"{error.filename or directory}: cannot write ({_cause(error)})") from None


def _cause(error: OSError) -> str:
    return error.strerror or type(error).__name__
