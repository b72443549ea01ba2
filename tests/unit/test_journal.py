"""Unit tests of mlflow_sync.journal.Journal: the resumable import's one-line-per-step record."""

from __future__ import annotations

import csv
import json
import threading

import pytest

from mlflow_sync.journal import CREATED, DONE, Journal


@pytest.fixture
def path(tmp_path):
    return tmp_path / "work" / "nested" / "journal.jsonl"


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_new_journal_is_empty_and_creates_its_directory(path):
    journal = Journal(path)
    try:
        assert path.parent.is_dir()
        assert journal.get("run", "s1") is None
        assert journal.target("run", "s1") is None
        assert journal.is_done("run", "s1") is False
        assert journal.entries() == []
    finally:
        journal.close()


def test_record_created_then_done(path):
    journal = Journal(path)
    journal.record("run", "s1", "t1", CREATED)
    assert journal.get("run", "s1") == {"kind": "run", "source": "s1", "target": "t1", "state": CREATED}
    assert journal.target("run", "s1") == "t1"
    assert journal.is_done("run", "s1") is False
    journal.record("run", "s1", "t1", DONE)
    assert journal.is_done("run", "s1") is True
    assert journal.get("run", "s1")["state"] == DONE
    journal.close()


def test_every_record_is_one_json_line_on_disk_at_once(path):
    journal = Journal(path)
    journal.record("experiment", "1", "7", DONE)
    # flushed before close: a SIGKILL right now keeps it
    assert lines(path) == [{"kind": "experiment", "source": "1", "target": "7", "state": DONE}]
    journal.record("run", "s1", "t1", CREATED, artifacts=3)
    assert lines(path)[-1] == {"kind": "run", "source": "s1", "target": "t1", "state": CREATED, "artifacts": 3}
    assert len(lines(path)) == 2
    journal.close()


def test_kind_and_source_together_are_the_key(path):
    journal = Journal(path)
    journal.record("run", "x", "run-target", DONE)
    journal.record("logged_model", "x", "model-target", CREATED)
    assert journal.target("run", "x") == "run-target"
    assert journal.target("logged_model", "x") == "model-target"
    assert journal.is_done("run", "x") and not journal.is_done("logged_model", "x")
    assert journal.get("run", "y") is None
    journal.close()


def test_later_lines_update_earlier_ones_and_keep_their_extra_fields(path):
    journal = Journal(path)
    journal.record("run", "s1", "t1", CREATED, metrics_done=False, batches=2)
    journal.record("run", "s1", "t1", DONE, metrics_done=True)
    assert journal.get("run", "s1") == {"kind": "run", "source": "s1", "target": "t1", "state": DONE,
                                        "metrics_done": True, "batches": 2}
    journal.close()
    reopened = Journal(path)
    assert reopened.get("run", "s1") == {"kind": "run", "source": "s1", "target": "t1", "state": DONE,
                                         "metrics_done": True, "batches": 2}
    reopened.close()


def test_entries_persist_across_reopen_and_new_records_append(path):
    journal = Journal(path)
    journal.record("experiment", "1", "11", DONE)
    journal.record("run", "r1", "t1", CREATED)
    journal.close()

    reopened = Journal(path)
    assert reopened.target("experiment", "1") == "11"
    assert reopened.is_done("experiment", "1")
    assert reopened.target("run", "r1") == "t1" and not reopened.is_done("run", "r1")
    reopened.record("run", "r1", "t1", DONE)
    reopened.record("run", "r2", "t2", DONE)
    reopened.close()

    assert len(lines(path)) == 4
    third = Journal(path)
    assert third.is_done("run", "r1") and third.is_done("run", "r2") and third.is_done("experiment", "1")
    third.close()


def test_non_ascii_ids_round_trip(path):
    journal = Journal(path)
    journal.record("registered_model", "modèle ☃", "modèle ☃", DONE, note="日本")
    journal.close()
    assert "modèle ☃" in path.read_text(encoding="utf-8")
    reopened = Journal(path)
    assert reopened.get("registered_model", "modèle ☃")["note"] == "日本"
    reopened.close()


def test_entries_filtered_by_kind(path):
    journal = Journal(path)
    journal.record("run", "r1", "t1", DONE)
    journal.record("experiment", "e1", "f1", DONE)
    journal.record("run", "r2", "t2", CREATED)
    assert sorted(e["source"] for e in journal.entries("run")) == ["r1", "r2"]
    assert [e["source"] for e in journal.entries("experiment")] == ["e1"]
    assert journal.entries("trace") == []
    assert len(journal.entries()) == 3
    journal.close()


def test_torn_last_line_is_ignored(path):
    journal = Journal(path)
    journal.record("run", "r1", "t1", DONE)
    journal.record("run", "r2", "t2", CREATED)
    journal.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "run", "source": "r2", "target": "t2", "sta')  # killed mid-write
    reopened = Journal(path)
    assert reopened.is_done("run", "r1")
    assert reopened.get("run", "r2") == {"kind": "run", "source": "r2", "target": "t2", "state": CREATED}
    assert len(reopened.entries()) == 2
    reopened.close()


def test_a_bad_line_before_the_last_is_an_error(path):
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "run", "source": "r1", "target": "t1", "state": "done"}\n'
                    '{"kind": "run", "sou\n'
                    '{"kind": "run", "source": "r2", "target": "t2", "state": "done"}\n', encoding="utf-8")
    with pytest.raises(ValueError):
        Journal(path)


def test_record_made_after_resuming_from_a_torn_line_survives(path):
    journal = Journal(path)
    journal.record("run", "r1", "t1", DONE)
    journal.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "run", "source": "r2", "ta')
    resumed = Journal(path)
    resumed.record("run", "r2", "t2", DONE)
    resumed.close()
    again = Journal(path)
    assert again.is_done("run", "r2")
    again.close()


def test_journal_reopens_after_resuming_from_a_torn_line_and_recording_more(path):
    journal = Journal(path)
    journal.record("run", "r1", "t1", DONE)
    journal.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "run", "source": "r2", "ta')
    resumed = Journal(path)
    resumed.record("run", "r2", "t2", DONE)
    resumed.record("run", "r3", "t3", DONE)
    resumed.close()
    again = Journal(path)
    assert again.is_done("run", "r2") and again.is_done("run", "r3")
    again.close()


def test_concurrent_records_are_whole_lines(path):
    journal = Journal(path)

    def worker(n: int) -> None:
        for i in range(50):
            journal.record("run", f"w{n}-{i}", f"t{n}-{i}", DONE, payload="x" * 200)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert len(lines(path)) == 400  # every line parses
    reopened = Journal(path)
    assert len(reopened.entries("run")) == 400
    assert reopened.target("run", "w7-49") == "t7-49"
    reopened.close()


def test_write_id_map(path, tmp_path):
    journal = Journal(path)
    journal.record("run", "r2", "t2", DONE)
    journal.record("experiment", "1", "9", DONE)
    journal.record("run", "r1", "t1", CREATED)
    journal.record("run", "r1", "t1b", DONE)
    out = tmp_path / "out"
    out.mkdir()
    json_path, csv_path = journal.write_id_map(out)
    journal.close()

    assert json_path == out / "id-map.json" and csv_path == out / "id-map.csv"
    assert json.loads(json_path.read_text(encoding="utf-8")) == {"experiment": {"1": "9"},
                                                                 "run": {"r1": "t1b", "r2": "t2"}}
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["kind", "source_id", "target_id", "state"],
                    ["experiment", "1", "9", DONE],
                    ["run", "r1", "t1b", DONE],
                    ["run", "r2", "t2", DONE]]
    assert sorted(p.name for p in out.iterdir()) == ["id-map.csv", "id-map.json"]  # no temporary files left
