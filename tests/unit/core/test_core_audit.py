"""The audit log: hash chain, tamper detection, crash safety, concurrent writers, retention."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from smartcloudops.audit import GENESIS_HASH, AuditLog, verify_audit
from smartcloudops.errors import InputError, StoreError


def _record(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "action": "restart_service",
        "instance": f"web-{n % 2 + 1}",
        "result": "succeeded",
        "action_id": f"act-{n}",
        "rule": "cpu_high",
        "dry_run": False,
        **extra,
    }


def _today_file(directory: Path) -> Path:
    return directory / f"remediation-{datetime.now(UTC):%Y-%m-%d}.jsonl"


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "remediation"


def _filled(log_dir: Path, n: int = 5) -> list[dict[str, Any]]:
    audit = AuditLog(log_dir)
    return [audit.append(_record(i)) for i in range(n)]


def test_chain_verifies(log_dir: Path) -> None:
    written = _filled(log_dir)
    assert written[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(written):
        assert after["prev_hash"] == before["hash"]
    path = _today_file(log_dir)
    assert path.exists()
    on_disk = [json.loads(line) for line in _lines(path)]
    assert on_disk == written  # what append returns is exactly what was written
    result = verify_audit(log_dir)
    assert (result.ok, result.records, result.files, result.problems) == (True, 5, 1, [])
    assert list(AuditLog(log_dir).records()) == written


def test_append_requires_the_contract_fields(log_dir: Path) -> None:
    with pytest.raises(InputError, match="action, result"):
        AuditLog(log_dir).append({"timestamp": "x", "instance": "web-1"})
    assert not _today_file(log_dir).exists()


def test_caller_cannot_forge_the_chain_fields(log_dir: Path) -> None:
    first = AuditLog(log_dir).append(_record(0, prev_hash="f" * 64, hash="e" * 64))
    assert first["prev_hash"] == GENESIS_HASH and first["hash"] != "e" * 64
    assert verify_audit(log_dir).ok


def test_non_json_values_are_stored_as_written(log_dir: Path) -> None:
    when = datetime(2024, 5, 6, 10, tzinfo=UTC)
    entry = AuditLog(log_dir).append(_record(0, timestamp=when, params={1: "a", "b": (1, 2)}))
    assert entry["timestamp"] == "2024-05-06 10:00:00+00:00"
    assert entry["params"] == {"1": "a", "b": [1, 2]}
    assert verify_audit(log_dir).ok


def test_editing_a_record_is_detected(log_dir: Path) -> None:
    _filled(log_dir)
    path = _today_file(log_dir)
    lines = _lines(path)
    record = json.loads(lines[2])
    record["result"] = "failed"
    lines[2] = (json.dumps(record, sort_keys=True) + "\n").encode()
    path.write_bytes(b"".join(lines))
    result = verify_audit(log_dir)
    assert not result.ok
    assert any(":3: record was edited" in p for p in result.problems)


def test_editing_and_rehashing_a_record_breaks_the_chain(log_dir: Path) -> None:
    from smartcloudops.audit import _digest

    _filled(log_dir)
    path = _today_file(log_dir)
    lines = _lines(path)
    record = json.loads(lines[1])
    record["instance"] = "db-9"
    record["hash"] = _digest(record)  # a careful forger fixes the record's own hash
    lines[1] = (json.dumps(record, sort_keys=True) + "\n").encode()
    path.write_bytes(b"".join(lines))
    result = verify_audit(log_dir)
    assert not result.ok
    assert any(":3: chain broken" in p for p in result.problems)


def test_removing_a_record_is_detected(log_dir: Path) -> None:
    _filled(log_dir)
    path = _today_file(log_dir)
    lines = _lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    result = verify_audit(log_dir)
    assert not result.ok and result.records == 4
    assert any("chain broken" in p for p in result.problems)


def test_reordering_records_is_detected(log_dir: Path) -> None:
    _filled(log_dir)
    path = _today_file(log_dir)
    lines = _lines(path)
    lines[1], lines[3] = lines[3], lines[1]
    path.write_bytes(b"".join(lines))
    result = verify_audit(log_dir)
    assert not result.ok
    assert len([p for p in result.problems if "chain broken" in p]) >= 2


def test_garbage_lines_are_problems_not_crashes(log_dir: Path) -> None:
    _filled(log_dir, 2)
    path = _today_file(log_dir)
    with open(path, "ab") as fh:
        fh.write(b"[1, 2]\n42\nnot json\n")
    result = verify_audit(log_dir)
    assert not result.ok
    assert sum("not a JSON object" in p for p in result.problems) == 2
    assert sum("not valid JSON" in p for p in result.problems) == 1


def test_torn_tail_is_ignored_then_repaired_on_next_append(log_dir: Path) -> None:
    written = _filled(log_dir, 3)
    path = _today_file(log_dir)
    # a crash in the middle of the fourth write: half a line, no newline, never acknowledged
    torn = (json.dumps(_record(99), sort_keys=True) + "\n").encode()[:57]
    with open(path, "ab") as fh:
        fh.write(torn)
    result = verify_audit(log_dir)
    assert result.ok and result.records == 3
    assert any("torn last line" in w for w in result.warnings)
    assert list(AuditLog(log_dir).records()) == written

    fourth = AuditLog(log_dir).append(_record(4))
    assert fourth["prev_hash"] == written[-1]["hash"]
    content = path.read_bytes()
    assert content.endswith(b"\n") and torn not in content
    result = verify_audit(log_dir)
    assert (result.ok, result.records, result.warnings) == (True, 4, [])


def test_torn_tail_from_a_killed_writer_process(log_dir: Path) -> None:
    """A real process dies mid-line (os._exit after a partial write); the log recovers."""
    written = _filled(log_dir, 2)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_die_mid_write, args=(str(_today_file(log_dir)),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert verify_audit(log_dir).records == 2
    third = AuditLog(log_dir).append(_record(3))
    assert third["prev_hash"] == written[-1]["hash"]
    result = verify_audit(log_dir)
    assert result.ok and result.records == 3 and result.warnings == []


def _die_mid_write(path: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"action": "scale_up", "instance": "web-1", "res')
    os._exit(9)


def test_a_corrupt_last_record_blocks_appends_with_a_clear_error(log_dir: Path) -> None:
    _filled(log_dir, 2)
    with open(_today_file(log_dir), "ab") as fh:
        fh.write(b"this is not a record\n")
    with pytest.raises(StoreError, match="ends with a corrupt record"):
        AuditLog(log_dir).append(_record(3))


def _append_many(directory: str, writer: int, count: int) -> None:
    audit = AuditLog(Path(directory))
    for i in range(count):
        audit.append(_record(i, writer=writer, note="x" * (i % 7) * 50))


def test_two_writer_processes_keep_lines_whole_and_the_chain_linear(log_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(log_dir), w, 200)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = _lines(_today_file(log_dir))
    assert len(lines) == 400
    records = [json.loads(line) for line in lines]  # every line whole
    assert sorted(r["writer"] for r in records).count(1) == 200
    result = verify_audit(log_dir)
    assert (result.ok, result.records, result.problems) == (True, 400, [])


def test_records_since_compares_instants(log_dir: Path) -> None:
    audit = AuditLog(log_dir)
    audit.append(_record(1, timestamp="2024-05-06T09:00:00+00:00"))
    audit.append(_record(2, timestamp=datetime(2024, 5, 6, 10, tzinfo=UTC)))  # written with a space
    audit.append(_record(3, timestamp="2024-05-06T13:30:00+02:00"))  # 11:30 UTC
    audit.append(_record(4, timestamp="garbage"))
    since = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
    assert [r["action_id"] for r in audit.records(since=since)] == ["act-2", "act-3"]
    assert len(list(audit.records())) == 4


def test_retention_prunes_old_day_files(log_dir: Path) -> None:
    today = datetime.now(UTC)
    old = log_dir / f"remediation-{today - timedelta(days=40):%Y-%m-%d}.jsonl"
    recent = log_dir / f"remediation-{today - timedelta(days=5):%Y-%m-%d}.jsonl"
    # real chained records, moved into older day files as if written back then
    AuditLog(log_dir).append(_record(0))
    _today_file(log_dir).rename(old)
    AuditLog(log_dir).append(_record(1))
    _today_file(log_dir).rename(recent)
    (log_dir / "notes.txt").write_text("not an audit file: never touched")
    AuditLog(log_dir, retention_days=30).append(_record(2))
    assert not old.exists()
    assert recent.exists() and _today_file(log_dir).exists() and (log_dir / "notes.txt").exists()
    # the first retained record links to a pruned one: that link is trusted, the rest must chain
    result = verify_audit(log_dir)
    assert (result.ok, result.records, result.files) == (True, 2, 2)


def test_removing_the_last_records_is_detected_by_the_head(log_dir: Path) -> None:
    _filled(log_dir)
    path = _today_file(log_dir)
    path.write_bytes(b"".join(_lines(path)[:-2]))  # the chain of the 3 left is intact
    result = verify_audit(log_dir)
    assert not result.ok and result.records == 3
    assert any("removed from the end" in p for p in result.problems)


def test_deleting_the_newest_day_file_is_detected(log_dir: Path) -> None:
    _filled(log_dir, 2)
    _today_file(log_dir).unlink()
    result = verify_audit(log_dir)
    assert not result.ok
    assert any("removed from the end" in p for p in result.problems)


def test_a_head_one_record_behind_is_a_warning_not_a_problem(log_dir: Path) -> None:
    written = _filled(log_dir, 3)
    head = log_dir / ".audit-head.json"
    head.write_text(json.dumps({"hash": written[-2]["hash"], "file": _today_file(log_dir).name}))
    result = verify_audit(log_dir)
    assert result.ok
    assert any("one record behind" in w for w in result.warnings)
