"""Remediation: rules, the engine that applies them, actions and the adapters they act through.

The public entry points are :class:`remediation.engine.RemediationEngine` (the anomaly sensor
and ChatOps use it), :func:`remediation.rules.load_rules` and the action registry in
:mod:`remediation.actions`. Nothing here connects to anything at import time.
"""
