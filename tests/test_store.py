"""The results store: atomic files, records read back, the resolved sweep kept current."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from greenbench.errors import UserError
from greenbench.records import FAILED, finish, new_record, to_json
from greenbench.store import SweepStore, atomic_write


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    tmp_dir = tmp_path / ".tmp"
    tmp_dir.mkdir()
    target = tmp_path / "record.json"
    atomic_write(target, b"first", tmp_dir)
    atomic_write(target, b"second", tmp_dir)
    assert target.read_bytes() == b"second"
    assert list(tmp_dir.iterdir()) == []
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_records_round_trip_and_strangers_are_reported(tmp_path: Path) -> None:
    store = SweepStore(tmp_path / "sweep")
    record = finish(new_record("abc123def456", "s", {"model": "gan"}), FAILED, "boom")
    with store.open_for_writing():
        store.write_record(record["run_id"], to_json(record))
        (store.records_dir / "torn.json").write_text('{"run_id": "torn"')  # not JSON
        (store.records_dir / "other.json").write_text(to_json({**record, "run_id": "different"}))
        strangers = {
            "list": [1, 2, 3], "null": None, "text": "a string", "phantom": {"a": 1},
            "future": {**record, "run_id": "future", "schema": 99},
            "no_status": {key: v for key, v in record.items() if key != "status"} | {
                "run_id": "no_status"},
        }
        for name, content in strangers.items():
            (store.records_dir / f"{name}.json").write_text(json.dumps(content))

    records, unreadable = store.read_records()

    assert records == {"abc123def456": record}
    why = {path.stem: reason for path, reason in unreadable}
    assert sorted(why) == sorted(["other", "torn", *strangers])
    assert "holds the record of run 'different'" in why["other"]
    assert why["torn"].startswith("not readable as JSON")
    assert why["list"] == "a JSON list, not a record" and "NoneType" in why["null"]
    assert why["phantom"] == "no schema field: not a greenbench record"
    assert why["future"] == "schema 99; this greenbench reads schemas 1, 2 and 3"
    assert why["no_status"] == "status is missing or not a str"


def test_sweep_file_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    store = SweepStore(tmp_path / "sweep")
    with store.open_for_writing():
        assert store.write_sweep("name: a\n") is True
        assert store.write_sweep("name: a\n") is False
        assert store.write_sweep("name: b\n") is True
    assert (tmp_path / "sweep" / "sweep.yaml").read_text() == "name: b\n"


def test_leftovers_of_a_killed_write_are_cleared_on_open(tmp_path: Path) -> None:
    store = SweepStore(tmp_path / "sweep")
    (tmp_path / "sweep" / ".tmp").mkdir(parents=True)
    (tmp_path / "sweep" / ".tmp" / "abc.json.x1y2").write_text("{half")
    with store.open_for_writing():
        assert list((tmp_path / "sweep" / ".tmp").iterdir()) == []


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    store = SweepStore(tmp_path / "sweep")
    second = SweepStore(tmp_path / "sweep")
    with store.open_for_writing(), pytest.raises(UserError, match="another greenbench run"):
        second.open_for_writing().__enter__()


def test_an_output_folder_that_cannot_be_made_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot create the results folder"):
        SweepStore(tmp_path / "file" / "sweep").open_for_writing().__enter__()


def test_an_older_record_is_read_under_the_current_names(tmp_path: Path) -> None:
    store = SweepStore(tmp_path / "sweep")
    store.records_dir.mkdir(parents=True)
    older = finish(new_record("abc123def456", "s", {"model": "gan"}), FAILED, "boom")
    older.update(schema=2, timings={"setup_s": 1.0, "train_s": 9.5},
                 quality_curve=[{"epoch": 1, "step": 10, "train_j": 50.0, "kid": 0.4}])
    (store.records_dir / "abc123def456.json").write_text(json.dumps(older))

    records, _ = store.read_records()
    (record,) = records.values()

    assert record["schema"] == 2  # as written: readers may tell an older record
    assert record["timings"] == {"setup_s": 1.0, "trainer_fit_s": 9.5}
    assert record["quality_curve"] == [{"epoch": 1, "step": 10, "fit_j": 50.0, "kid": 0.4}]
