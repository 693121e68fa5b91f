"""Adapters: how actions reach a host.

``base`` (the interface) and ``simulator`` are re-exported here; ``local``
(:class:`~remediation.adapters.local.LocalProcessAdapter`) and ``aws``
(:class:`~remediation.adapters.aws.AwsAdapter`, boto3 imported on first use) are imported
from their modules by whoever wires them.
"""

from remediation.adapters.base import HealthReport, RemediationAdapter
from remediation.adapters.simulator import SimulatorAdapter

__all__ = ["HealthReport", "RemediationAdapter", "SimulatorAdapter"]
