"""Remediation fixtures: the real event store (SQLite) and audit log in tmp dirs, a
recording adapter and a settable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from remediation_helpers import CPU_RULE, Clock, FakeAdapter

from remediation.engine import Escalation, RemediationEngine
from remediation.rules import RuleSet, parse_rules
from smartcloudops.audit import AuditLog
from smartcloudops.events import EventStore


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    yield store
    store.close()


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def audit(audit_dir: Path) -> AuditLog:
    return AuditLog(audit_dir)


@pytest.fixture
def adapter() -> FakeAdapter:
    return FakeAdapter()


@pytest.fixture
def escalations() -> list[Escalation]:
    return []


@pytest.fixture
def make_engine(
    adapter: FakeAdapter,
    events: EventStore,
    audit: AuditLog,
    clock: Clock,
    escalations: list[Escalation],
) -> Callable[..., RemediationEngine]:
    def build(rules: str | RuleSet = CPU_RULE, *, dry_run: bool = False, **kwargs: Any) -> RemediationEngine:
        ruleset = parse_rules(rules) if isinstance(rules, str) else rules
        kwargs.setdefault("notify", escalations.append)
        return RemediationEngine(
            ruleset,
            kwargs.pop("adapter", adapter),
            kwargs.pop("events", events),
            audit,
            dry_run=dry_run,
            clock=clock,
            **kwargs,
        )

    return build
