"""The adapter settings ask for (``SMARTCLOUDOPS_REMEDIATION_ADAPTER``), built without
connecting to anything: boto3 clients and subprocesses start on the first action.

``SMARTCLOUDOPS_REMEDIATION_ADAPTER_CONFIG`` points at a YAML file::

    # local: commands are argv lists, never shell strings; services select an entry
    hosts: [web-1]
    timeout_seconds: 30
    allowlist:
      restart_service: {app: [systemctl, restart, app.service]}
      health: {app: [systemctl, is-active, --quiet, app.service]}

    # aws
    targets:
      web-1: {asg: web-asg, instance_id: i-0123456789abcdef0}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from remediation.adapters.base import RemediationAdapter
from smartcloudops.errors import ActionError, ConfigError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

_ENV_CONFIG = "SMARTCLOUDOPS_REMEDIATION_ADAPTER_CONFIG"


def _read_config(path: Path | None, *, required: bool, adapter: str) -> dict[str, Any]:
    if path is None:
        if required:
            raise ConfigError(f"the {adapter} adapter needs {_ENV_CONFIG} (a YAML file with 'targets')")
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{_ENV_CONFIG}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_ENV_CONFIG}: cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_ENV_CONFIG}: {path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_ENV_CONFIG}: {path} must hold a mapping")
    return data


def _known(data: Mapping[str, Any], valid: tuple[str, ...], path: Path | None) -> None:
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"{_ENV_CONFIG}: {path}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )


def adapter_from_settings(settings: Settings) -> RemediationAdapter:
    """The local or AWS adapter (the simulator is built by the engine, with its probe).

    Raises:
        ConfigError: the adapter config is missing, unreadable or malformed (named).
    """
    kind = settings.remediation_adapter
    path = settings.remediation_adapter_config
    if kind == "local":
        from remediation.adapters.local import SYSTEMD_ALLOWLIST, LocalProcessAdapter

        data = _read_config(path, required=False, adapter=kind)
        _known(data, ("hosts", "allowlist", "timeout_seconds"), path)
        hosts = data.get("hosts")
        if hosts is not None and (
            not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts)
        ):
            raise ConfigError(f"{_ENV_CONFIG}: {path}: 'hosts' must be a list of host names")
        allowlist = data.get("allowlist", SYSTEMD_ALLOWLIST)
        if not isinstance(allowlist, dict) or not all(isinstance(v, dict) for v in allowlist.values()):
            raise ConfigError(
                f"{_ENV_CONFIG}: {path}: 'allowlist' must map operation -> service -> argv list"
            )
        timeout = data.get("timeout_seconds", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{_ENV_CONFIG}: {path}: 'timeout_seconds' must be a positive number")
        try:
            return LocalProcessAdapter(allowlist, hosts=hosts, timeout_seconds=float(timeout))
        except ActionError as exc:
            raise ConfigError(f"{_ENV_CONFIG}: {path}: {exc}") from exc
    if kind == "aws":
        from remediation.adapters.aws import AwsAdapter, AwsTarget

        data = _read_config(path, required=True, adapter=kind)
        _known(data, ("targets",), path)
        raw = data.get("targets")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"{_ENV_CONFIG}: {path}: 'targets' must map host -> {{asg, instance_id}}")
        targets = {}
        for host, spec in raw.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("asg"), str) or not spec["asg"]:
                raise ConfigError(f"{_ENV_CONFIG}: {path}: target {host!r} needs an 'asg' name")
            extra = sorted(set(spec) - {"asg", "instance_id"})
            if extra:
                raise ConfigError(
                    f"{_ENV_CONFIG}: {path}: target {host!r}: unknown field(s) {', '.join(extra)}; "
                    "valid: asg, instance_id"
                )
            instance = spec.get("instance_id")
            targets[str(host)] = AwsTarget(asg=spec["asg"], instance_id=str(instance) if instance else None)
        return AwsAdapter(
            targets,
            region=settings.aws_region,
            endpoint_url=settings.remediation_aws_endpoint_url,
            timeout_seconds=settings.http_timeout_seconds,
        )
    raise ConfigError(f"the {kind!r} adapter is built by the engine, not by adapter_from_settings")
