"""Command-line entry points: ``python -m remediation.scripts.<action> --host HOST``.

Each script runs one action through the same registry and executor as the rule engine, so
what an operator does by hand is validated, dry-run aware and audited the same way.
"""
