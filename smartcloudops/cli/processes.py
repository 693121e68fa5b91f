"""Start background services and stop *all* of them again.

Each service runs in its own session (its own process group) with a marker variable in its
environment. Stopping signals the whole group, and then the marker finds anything that
escaped the group (NOTES.md: ``airflow standalone`` leaves its scheduler and workers alive
after SIGTERM), so ``down`` can check that nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

MARKER = "SMARTCLOUDOPS_STACK"


def venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run `make venv`)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Service:
    name: str
    pid: int
    log: Path
    url: str | None = None


class ProcessManager:
    """Owns the services of one stack, identified by ``stack_id`` (a directory path)."""

    def __init__(self, run_dir: Path, stack_id: str) -> None:
        self.run_dir = Path(run_dir)
        self.stack_id = stack_id
        self.services: list[Service] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        url: str | None = None,
        cwd: Path | None = None,
    ) -> Service:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / f"{name}.log"
        child_env = {**os.environ, **(env or {}), MARKER: self.stack_id}
        child_env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
            )
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        service = Service(name, proc.pid, log_path, url)
        self.services.append(service)
        return service

    def wait_http(
        self, service: Service, path: str = "", timeout: float = 60.0, ok: Callable[[int], bool] | None = None
    ) -> None:
        """Wait until ``service.url + path`` answers (any status accepted by ``ok``)."""
        accept = ok or (lambda status: status < 500)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not _alive(service.pid):
                raise RuntimeError(
                    f"{service.name} exited during start; see {service.log}:\n{_tail(service.log)}"
                )
            try:
                response = httpx.get(f"{service.url}{path}", timeout=2.0)
                if accept(response.status_code):
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        raise RuntimeError(
            f"{service.name} did not answer at {service.url}{path} within {timeout:.0f}s ({last}); "
            f"see {service.log}"
        )

    def stop_all(self, timeout: float = 15.0) -> list[int]:
        """Stop every service started by this stack; return the pids that would not die."""
        pids = {s.pid for s in self.services} | set(read_pid_files(self.run_dir))
        return stop_stack(self.stack_id, pids, timeout)


def read_pid_files(run_dir: Path) -> list[int]:
    pids = []
    for path in Path(run_dir).glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(path.read_text().strip()))
    return pids


def marked_pids(stack_id: str) -> list[int]:
    """Every live process whose environment carries this stack's marker."""
    needle = f"{MARKER}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes; reap it if it is our child.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_stack(stack_id: str, pids: set[int] | None = None, timeout: float = 15.0) -> list[int]:
    targets = set(pids or ()) | set(marked_pids(stack_id))
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = {p for p in targets | set(marked_pids(stack_id)) if _alive(p)}
        if not targets:
            return []
        time.sleep(0.3)
    for pid in targets:
        _signal(pid, signal.SIGKILL)
    time.sleep(0.5)
    return [p for p in targets | set(marked_pids(stack_id)) if _alive(p)]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
