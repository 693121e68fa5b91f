"""Adapter for the machine it runs on: only commands from a fixed allowlist, as argv lists.

No shell is ever involved: a command is an argv list written by the operator in the
allowlist; the action's parameters only *select* an entry (``service="app"`` picks the
``app`` entry), they are never pasted into a command line. Anything not in the allowlist is
refused before a process starts.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Mapping, Sequence
from typing import ClassVar

from remediation.adapters.base import HealthReport, RemediationAdapter
from smartcloudops.errors import ActionError

#: operation -> service -> argv. Example for systemd units:
SYSTEMD_ALLOWLIST: dict[str, dict[str, list[str]]] = {
    "restart_service": {"app": ["systemctl", "restart", "app.service"]},
    "health": {"app": ["systemctl", "is-active", "--quiet", "app.service"]},
}


class LocalProcessAdapter(RemediationAdapter):
    name: ClassVar[str] = "local"

    def __init__(
        self,
        allowlist: Mapping[str, Mapping[str, Sequence[str]]],
        *,
        hosts: Sequence[str] | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        for operation, entries in allowlist.items():
            for service, argv in entries.items():
                if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
                    raise ActionError(
                        f"allowlist entry {operation}/{service} must be a non-empty argv list "
                        "of strings, never a shell string"
                    )
        self.allowlist = {op: {svc: list(argv) for svc, argv in e.items()} for op, e in allowlist.items()}
        self._hosts = list(hosts) if hosts else [socket.gethostname()]
        self.timeout_seconds = timeout_seconds

    def hosts(self) -> list[str]:
        return list(self._hosts)

    def _argv(self, operation: str, host: str, service: str) -> list[str]:
        if host not in self._hosts:
            raise ActionError(f"unknown host {host!r}; this adapter acts only on {', '.join(self._hosts)}")
        entries = self.allowlist.get(operation, {})
        if service not in entries:
            allowed = ", ".join(sorted(entries)) or "none"
            raise ActionError(f"{operation} of {service!r} is not in the allowlist (allowed: {allowed})")
        return list(entries[service])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, shell=False, capture_output=True, text=True,
                timeout=self.timeout_seconds, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ActionError(f"{argv[0]} timed out after {self.timeout_seconds:g}s") from exc
        except OSError as exc:
            raise ActionError(f"cannot run {argv[0]}: {exc}") from exc

    def restart_service(self, host: str, service: str) -> None:
        argv = self._argv("restart_service", host, service)
        done = self._run(argv)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-300:]
            raise ActionError(f"{' '.join(argv)} exited {done.returncode}: {tail}")

    def health(self, host: str, service: str = "app") -> HealthReport:
        argv = self._argv("health", host, service)
        done = self._run(argv)
        ok = done.returncode == 0
        return HealthReport(host=host, healthy=ok, checks={f"{service}_active": ok})

    def capacity(self, host: str) -> int:
        return 1

    def scale_up(self, host: str, replicas: int, *, max_capacity: int) -> int:
        raise ActionError("the local adapter cannot scale; use the AWS adapter")

    def scale_down(self, host: str, replicas: int, *, min_capacity: int) -> int:
        raise ActionError("the local adapter cannot scale; use the AWS adapter")
