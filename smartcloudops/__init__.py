"""SmartCloudOps AI core: settings, domain types, metric sources and stores, logs, CLI."""

__version__ = "0.1.0"
