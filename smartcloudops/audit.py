"""The remediation audit log: JSON lines, one file a day, hash-chained, fsynced.

Every record carries ``prev_hash`` (the previous record's ``hash``, across day files) and its
own ``hash`` = SHA-256 of its canonical JSON without ``hash``. Editing, removing or reordering
any record breaks the chain, which :func:`verify_audit` reports.

Several processes may append (the sensor, ChatOps approvals, the scripts): an exclusive
``flock`` around read-last-hash + write keeps lines whole and the chain linear. A crash in the
middle of a write can leave a torn last line; the next append cuts it off first (it was never
acknowledged), so the log stays verifiable up to the last acknowledged record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from smartcloudops.domain import utcnow
from smartcloudops.errors import InputError, StoreError

GENESIS_HASH = "0" * 64
#: The newest record's hash, rewritten after every append. A hash chain alone cannot show that
#: records were cut off its *end*; the head can, because it names the record the log ends with.
HEAD_FILE = ".audit-head.json"
REQUIRED_FIELDS = ("timestamp", "action", "instance", "result")
_FILE_RE = re.compile(r"^remediation-(\d{4}-\d{2}-\d{2})\.jsonl$")


def _digest(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_time(value: Any) -> datetime | None:
    try:
        return _as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def day_files(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if _FILE_RE.match(p.name))


def _last_complete_line(path: Path) -> bytes | None:
    """The last newline-terminated line of ``path`` (reads backwards, not the whole file)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 4096
        data = b""
        pos = size
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            lines = data.split(b"\n")
            # lines[-1] is the (possibly empty) unterminated tail; lines[-2] the last whole line
            if len(lines) >= 3 or (pos == 0 and len(lines) >= 2):
                return lines[-2]
        return None


class AuditLog:
    def __init__(self, directory: Path, retention_days: int = 90) -> None:
        self.directory = Path(directory)
        self.retention_days = retention_days

    def _path_for(self, when: datetime) -> Path:
        return self.directory / f"remediation-{when:%Y-%m-%d}.jsonl"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".audit.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _repair_torn_tail(self, path: Path) -> None:
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            content = fh.read()
            keep = content.rfind(b"\n") + 1
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())

    def _last_hash(self) -> str:
        for path in reversed(day_files(self.directory)):
            line = _last_complete_line(path)
            if line:
                try:
                    return str(json.loads(line)["hash"])
                except (ValueError, KeyError) as exc:
                    raise StoreError(f"audit log {path} ends with a corrupt record: {exc}") from exc
        return GENESIS_HASH

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            raise InputError(f"audit record lacks required field(s): {', '.join(missing)}")
        now = utcnow()
        with self._locked():
            path = self._path_for(now)
            self._repair_torn_tail(path)
            try:
                # Round-trip through JSON first, so the hash covers exactly the bytes written
                # and read back (datetimes become strings, tuples lists, keys strings).
                entry = json.loads(json.dumps(
                    {k: v for k, v in record.items() if k not in ("hash", "prev_hash")}, default=str
                ))
            except (TypeError, ValueError) as exc:
                raise InputError(f"audit record is not JSON-serialisable: {exc}") from exc
            entry["prev_hash"] = self._last_hash()
            entry["hash"] = _digest(entry)
            line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                # One write of the whole line: with the lock held, lines never interleave.
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            # Acknowledged once the line is fsynced; the head follows. A crash in between
            # leaves the head one record behind, which verify accepts (and says so).
            self._write_head(entry["hash"], path.name)
            self._prune(now)
        return entry

    def _write_head(self, newest_hash: str, file_name: str) -> None:
        head = self.directory / HEAD_FILE
        tmp = head.with_name(f"{HEAD_FILE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"hash": newest_hash, "file": file_name}))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, head)

    def _prune(self, now: datetime) -> None:
        cutoff = (now - timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        for path in day_files(self.directory):
            match = _FILE_RE.match(path.name)
            if match and match.group(1) < cutoff:
                path.unlink(missing_ok=True)

    def records(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        floor = _as_utc(since) if since is not None else None
        for path in day_files(self.directory):
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # torn tail: never acknowledged
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(record, dict):
                        continue
                    if floor is not None:
                        # Compare instants, not strings: "2024-05-01 10:00:00+00:00" (a
                        # datetime written with str()) sorts before "2024-05-01T09:00:00".
                        when = _parse_time(record.get("timestamp"))
                        if when is None or when < floor:
                            continue
                    yield record


@dataclass
class AuditVerification:
    ok: bool
    records: int
    files: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def verify_audit(directory: Path) -> AuditVerification:
    """Walk every day file in order and check each record's hash and link to the previous.

    The first retained record may link to a pruned file, so its ``prev_hash`` is trusted;
    everything after it must chain exactly.
    """
    files = day_files(Path(directory))
    problems: list[str] = []
    warnings: list[str] = []
    count = 0
    prev: str | None = None
    hashes: list[str] = []
    for path in files:
        with open(path, "rb") as fh:
            content = fh.read()
        lines = content.split(b"\n")
        tail = lines.pop()  # empty when the file ends with a newline
        if tail:
            warnings.append(
                f"{path.name}: torn last line ({len(tail)} bytes) ignored; it was never acknowledged"
            )
        for lineno, raw in enumerate(lines, start=1):
            where = f"{path.name}:{lineno}"
            try:
                record = json.loads(raw)
            except ValueError:
                problems.append(f"{where}: not valid JSON")
                prev = None
                continue
            if not isinstance(record, dict):
                problems.append(f"{where}: not a JSON object")
                prev = None
                continue
            count += 1
            missing = [f for f in (*REQUIRED_FIELDS, "hash", "prev_hash") if f not in record]
            if missing:
                problems.append(f"{where}: missing field(s) {', '.join(missing)}")
                continue
            if _digest(record) != record["hash"]:
                problems.append(f"{where}: record was edited (hash mismatch)")
            if prev is not None and record["prev_hash"] != prev:
                problems.append(f"{where}: chain broken (a record before it was removed, added or reordered)")
            prev = record["hash"]
            hashes.append(str(record["hash"]))
    _check_head(Path(directory), hashes, problems, warnings)
    return AuditVerification(
        ok=not problems, records=count, files=len(files), problems=problems, warnings=warnings
    )


def _check_head(directory: Path, hashes: list[str], problems: list[str], warnings: list[str]) -> None:
    """Compare the log's last record with the head checkpoint written by every append."""
    head_path = directory / HEAD_FILE
    if not head_path.exists():
        if hashes:
            warnings.append(f"no {HEAD_FILE}: cannot tell whether records were cut from the end")
        return
    try:
        head = json.loads(head_path.read_text())
        head_hash = str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{HEAD_FILE} is unreadable: {exc}")
        return
    if hashes and hashes[-1] == head_hash:
        return
    if len(hashes) >= 2 and hashes[-2] == head_hash:
        warnings.append(f"{HEAD_FILE} is one record behind (a crash between an append and its checkpoint)")
        return
    if head_hash in hashes:
        behind = len(hashes) - 1 - hashes.index(head_hash)
        problems.append(f"{behind} records after the last checkpointed one were not written by the audit log")
    else:
        problems.append(
            f"the log does not end with its newest acknowledged record ({head_hash[:12]}… in "
            f"{head.get('file', '?')}): records were removed from the end"
        )
