"""Small helpers for tests that start real services on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout.

    Exceptions from ``check`` count as "not yet" (a port that is not open yet, ...).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def require_binary(name: str, install_hint: str) -> str:
    """Path of ``name``; fail (never skip) with how to install it when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; install it with: {install_hint}")
    return path


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """moto's server mode on a free loopback port; yields its endpoint URL.

    AWS is the one thing these machines cannot reach, so S3 is moto over real HTTP, reached
    by boto3 exactly as a real endpoint would be. Stopped by PID on exit.
    """
    binary = VENV_BIN / "moto_server"
    if not binary.exists():
        raise AssertionError(f"{binary} is missing; install the dev extras: pip install 'moto[server]'")
    port = free_port()
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited with {proc.returncode}; see {log_dir / 'moto.log'}")
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(answers, 30, f"moto_server on {url}")
        yield url
    finally:
        stop_process(proc)
        log.close()


def aws_test_credentials() -> dict[str, str]:
    """Fake credentials for moto; never real ones."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
