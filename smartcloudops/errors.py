"""The project's one exception tree.

Callers catch ``SmartCloudOpsError`` (or a subclass) and show its message; third-party
exceptions are translated at the boundary with ``raise ... from`` so a traceback never
reaches an operator.
"""

from __future__ import annotations


class SmartCloudOpsError(Exception):
    """Base of every error the project raises on purpose."""


class InputError(SmartCloudOpsError, ValueError):
    """Input from a user or a file is malformed; the message names the problem."""


class ConfigError(SmartCloudOpsError):
    """Settings or a configuration file (rules, ...) is invalid."""


class SourceError(SmartCloudOpsError):
    """A metric source (Prometheus, simulator) could not be read."""


class StoreError(SmartCloudOpsError):
    """The metric store, event store or audit log could not be read or written."""


class ModelError(SmartCloudOpsError):
    """No usable model: none registered, failed to load, or input it cannot score."""


class ActionError(SmartCloudOpsError):
    """A remediation action or its adapter failed."""
