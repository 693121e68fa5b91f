"""``kill -9`` of a real audit writer mid-stream leaves a log that ``smartcloudops audit
verify`` accepts, holding every record the writer had acknowledged.

(Two concurrent writers and a torn line written by ``os._exit`` are covered in
tests/unit/core/test_core_audit.py; this adds a real SIGKILL at an arbitrary point of a
stream of appends: inside the lock, the write or the fsync.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smartcloudops.audit import AuditLog, verify_audit

# Acknowledges each record (prints its hash) only after append() returned; big records make
# the write and fsync a larger share of the time the kill can land in.
WRITER = r"""
import sys
from pathlib import Path
from smartcloudops.audit import AuditLog

audit = AuditLog(Path(sys.argv[1]))
note = "x" * int(sys.argv[2])
i = 0
while True:
    entry = audit.append({"timestamp": "2026-01-05T12:00:00+00:00", "action": "restart_service",
                          "instance": f"web-{i % 5}", "result": "succeeded", "seq": i, "note": note})
    sys.stdout.write(entry["hash"] + "\n")
    sys.stdout.flush()
    i += 1
"""


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("smartcloudops")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "smartcloudops.cli"]


@pytest.mark.parametrize(("acks_before_kill", "note_bytes"), [(5, 200), (40, 20_000), (120, 2_000)])
def test_sigkill_mid_stream_keeps_every_acknowledged_record(
    tmp_path: Path, acks_before_kill: int, note_bytes: int
) -> None:
    directory = tmp_path / "audit"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    acked: list[str] = []
    for _round in range(2):  # kill twice: recovery from the first must not confuse the second
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(note_bytes)],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        try:
            assert proc.stdout is not None
            target = len(acked) + acks_before_kill
            while len(acked) < target:
                line = proc.stdout.readline()
                assert line, f"writer exited early with {proc.poll()}"
                acked.append(line.strip())
            os.kill(proc.pid, signal.SIGKILL)  # while it is busy with the next append
            proc.wait(timeout=30)
            # Hashes already in the pipe were acknowledged too (printed after append()).
            acked.extend(h.strip() for h in proc.stdout.read().splitlines() if h.strip())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL

        result = verify_audit(directory)
        assert result.ok, result.problems
        stored = [r["hash"] for r in AuditLog(directory).records()]
        # Every acknowledged record is there, in order; at most one more (written, not yet
        # acknowledged when the kill landed) follows them.
        assert stored[: len(acked)] == acked
        assert len(stored) - len(acked) in (0, 1)
        acked = stored

        cli = subprocess.run(
            [*_cli(), "audit", "verify", "--dir", str(directory)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert f"audit verify OK: {len(stored)} records" in cli.stdout

    # And the log stays appendable: the next record chains onto the last acknowledged one.
    entry = AuditLog(directory).append(
        {"timestamp": "2026-01-05T12:00:00+00:00", "action": "x", "instance": "h", "result": "ok"}
    )
    assert entry["prev_hash"] == acked[-1]
    assert verify_audit(directory).ok
