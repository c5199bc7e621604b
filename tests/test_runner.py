"""The runner's logic against an executor that trains nothing: what it skips, runs again,
stores, keeps on interruption and sets aside. The real executors (processes, Ray) have their
own tests; here each point's outcome is chosen by the test."""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenbench import store
from greenbench.errors import UserError
from greenbench.records import (
    DIVERGED,
    FAILED,
    OK,
    SKIPPED,
    PointResult,
    RunSpec,
    finish,
    new_record,
)
from greenbench.sweep.progress import SweepProgress
from greenbench.sweep.runner import plan, run_sweep
from greenbench.sweep.schema import Sweep, load_sweep

SWEEP = """\
name: fake
dataset: {name: digits, image_size: 8}
train: {steps: 2}
grid:
  model: [gan, vae]
  precision: [32-true, bf16-mixed]
"""


class FakeExecutor:
    """Runs nothing: each point's status is ``outcome(spec)``; after ``stop_after`` points the
    next one is interrupted (Ctrl-C)."""

    name = "fake"

    def __init__(self, outcome: Callable[[RunSpec], str] = lambda spec: OK,
                 stop_after: int | None = None):
        self.outcome, self.stop_after = outcome, stop_after
        self.ran: list[str] = []

    def run_all(self, specs: list[RunSpec], progress: SweepProgress
                ) -> Iterator[tuple[RunSpec, PointResult]]:
        for spec in specs:
            if self.stop_after is not None and len(self.ran) == self.stop_after:
                raise KeyboardInterrupt
            self.ran.append(spec.run_id)
            status = self.outcome(spec)
            record = finish(new_record(spec.run_id, spec.sweep, spec.config), status,
                            None if status == OK else f"chosen {status}")
            yield spec, PointResult(record, {f"images/{spec.run_id}.png": b"\x89PNG"})


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return load_sweep(tmp_path / "sweep.yaml")


def run(sweep: Sweep, executor: FakeExecutor, force: bool = False) -> tuple[dict, str]:
    """Run the sweep; (its statuses, what the progress printed)."""
    out = io.StringIO()
    outcome = run_sweep(sweep, executor, SweepProgress(out), force=force)
    return outcome.statuses, out.getvalue()


def stored(sweep: Sweep) -> dict[str, tuple[int, str]]:
    """Each record's modification time and status."""
    return {path.stem: (path.stat().st_mtime_ns, json.loads(path.read_text())["status"])
            for path in (sweep.directory / "records").iterdir()}


def test_every_point_is_stored_and_a_second_run_skips_them(sweep: Sweep) -> None:
    statuses, printed = run(sweep, executor := FakeExecutor())
    assert len(statuses) == 4 and set(statuses.values()) == {OK}
    assert len(executor.ran) == 4 and "[4/4]" in printed
    before = stored(sweep)
    for run_id in before:
        assert (sweep.directory / "images" / f"{run_id}.png").read_bytes() == b"\x89PNG"

    again = FakeExecutor()
    statuses, printed = run(sweep, again)
    assert again.ran == [] and "4 already recorded, 0 to run" in printed
    assert stored(sweep) == before  # not even touched


def test_force_runs_every_recorded_point_again(sweep: Sweep) -> None:
    run(sweep, FakeExecutor())
    before = stored(sweep)
    run(sweep, forced := FakeExecutor(), force=True)
    assert sorted(forced.ran) == sorted(before)
    assert all(stored(sweep)[run_id][0] != before[run_id][0] for run_id in before)


def test_failed_points_run_again_and_final_outcomes_do_not(sweep: Sweep) -> None:
    outcomes = dict(zip((spec.run_id for spec in plan(sweep).specs),
                        (OK, SKIPPED, DIVERGED, FAILED), strict=True))
    statuses, _ = run(sweep, FakeExecutor(lambda spec: outcomes[spec.run_id]))
    assert statuses == outcomes  # a diverged or failed point does not stop the sweep
    failed = next(run_id for run_id, status in outcomes.items() if status == FAILED)

    again = FakeExecutor()
    statuses, printed = run(sweep, again)
    assert again.ran == [failed] and "3 already recorded, 1 to run" in printed
    assert statuses[failed] == OK


def test_an_interrupted_run_keeps_what_finished_and_the_next_resumes(sweep: Sweep) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(sweep, FakeExecutor(stop_after=2))
    kept = stored(sweep)
    assert len(kept) == 2
    assert not list((sweep.directory / ".tmp").glob("*.json"))

    resumed = FakeExecutor()
    statuses, _ = run(sweep, resumed)
    assert len(resumed.ran) == 2 and set(resumed.ran).isdisjoint(kept)
    assert {run_id: stored(sweep)[run_id] for run_id in kept} == kept
    assert len(statuses) == 4


def test_a_file_in_records_that_is_not_a_record_is_run_again_and_replaced(sweep: Sweep) -> None:
    run_id = plan(sweep).specs[0].run_id
    (sweep.directory / "records").mkdir(parents=True)
    (sweep.directory / "records" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id}))

    statuses, printed = run(sweep, executor := FakeExecutor())

    assert run_id in executor.ran and statuses[run_id] == OK
    assert "no schema field" in printed and "its point runs again and replaces it" in printed


def test_a_full_disk_keeps_the_finished_point_and_the_next_run_stores_it(
        sweep: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = store.atomic_write

    def disk_full(target: Path, content: bytes, tmp_dir: Path | None = None) -> None:
        if target.parent.name == "records":  # the disk fills up just as the record is written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real_write(target, content, tmp_dir)

    monkeypatch.setattr(store, "atomic_write", disk_full)
    with pytest.raises(UserError) as raised:
        run(sweep, FakeExecutor())
    assert "No space left on device" in str(raised.value) and "records" in str(raised.value)
    assert "the next run stores it without training" in str(raised.value)
    (pending,) = (sweep.directory / ".tmp" / "pending").iterdir()
    assert (pending / "record.json").is_file() and not stored(sweep)

    monkeypatch.setattr(store, "atomic_write", real_write)
    again = FakeExecutor()
    _, printed = run(sweep, again)
    assert "stored 1 finished point(s) an earlier run had set aside" in printed
    assert pending.name not in again.ran and len(again.ran) == 3  # not trained again
    assert len(stored(sweep)) == 4
    assert (sweep.directory / "images" / f"{pending.name}.png").is_file()
