"""Adapter for AWS through boto3: Auto Scaling desired capacity and SSM Run Command.

Hosts map to an Auto Scaling group (scaling, health) and an instance id (restarts through
SSM's ``AWS-RunShellScript``). Scaling is bounded twice: by the action's ``max_capacity`` and
by the group's own ``MaxSize``. The service name reaching SSM was validated by the action
schema (systemd-unit characters only) and is quoted as well. Clients are created on first
use with explicit timeouts; every botocore error becomes an ``ActionError``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from remediation.adapters.base import SERVICE_PATTERN, HealthReport, RemediationAdapter
from smartcloudops.errors import ActionError


@dataclass(frozen=True)
class AwsTarget:
    asg: str
    instance_id: str | None = None


class AwsAdapter(RemediationAdapter):
    name: ClassVar[str] = "aws"

    def __init__(
        self,
        targets: Mapping[str, AwsTarget],
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        timeout_seconds: float = 10.0,
        session: Any = None,
    ) -> None:
        self.targets = dict(targets)
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout_seconds = timeout_seconds
        self._session = session
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=self.timeout_seconds,
                read_timeout=self.timeout_seconds,
                retries={"max_attempts": 3, "mode": "standard"},
            )
            session = self._session or boto3.session.Session()
            self._clients[service] = session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[service]

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ActionError(f"{what}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise ActionError(f"{what}: {exc}") from exc

    def _target(self, host: str) -> AwsTarget:
        try:
            return self.targets[host]
        except KeyError:
            raise ActionError(f"unknown host {host!r}; known hosts: {', '.join(self.targets)}") from None

    def _group(self, host: str) -> dict[str, Any]:
        target = self._target(host)
        client = self._client("autoscaling")
        found = self._call(
            "describe_auto_scaling_groups", client.describe_auto_scaling_groups,
            AutoScalingGroupNames=[target.asg],
        )
        groups = found.get("AutoScalingGroups", [])
        if not groups:
            raise ActionError(f"auto scaling group {target.asg!r} of {host} does not exist")
        return dict(groups[0])

    def hosts(self) -> list[str]:
        return list(self.targets)

    def capacity(self, host: str) -> int:
        return int(self._group(host)["DesiredCapacity"])

    def _set_capacity(self, host: str, desired: int) -> int:
        target = self._target(host)
        client = self._client("autoscaling")
        self._call(
            "set_desired_capacity", client.set_desired_capacity,
            AutoScalingGroupName=target.asg, DesiredCapacity=desired, HonorCooldown=False,
        )
        return desired

    def scale_up(self, host: str, replicas: int, *, max_capacity: int) -> int:
        group = self._group(host)
        current = int(group["DesiredCapacity"])
        ceiling = min(max_capacity, int(group.get("MaxSize", max_capacity)))
        desired = min(current + replicas, ceiling)
        return current if desired <= current else self._set_capacity(host, desired)

    def scale_down(self, host: str, replicas: int, *, min_capacity: int) -> int:
        group = self._group(host)
        current = int(group["DesiredCapacity"])
        floor = max(min_capacity, int(group.get("MinSize", min_capacity)))
        desired = max(current - replicas, floor)
        return current if desired >= current else self._set_capacity(host, desired)

    def restart_service(self, host: str, service: str) -> None:
        target = self._target(host)
        if target.instance_id is None:
            raise ActionError(f"{host} has no instance id; cannot restart {service} through SSM")
        if not re.fullmatch(SERVICE_PATTERN, service):
            raise ActionError(f"refusing service name {service!r}")
        client = self._client("ssm")
        self._call(
            "ssm send_command", client.send_command,
            InstanceIds=[target.instance_id],
            DocumentName="AWS-RunShellScript",
            Comment=f"smartcloudops restart_service {service}",
            Parameters={"commands": [f"systemctl restart {shlex.quote(service)}"]},
            TimeoutSeconds=60,
        )

    def health(self, host: str, service: str = "app") -> HealthReport:
        target = self._target(host)
        group = self._group(host)
        instances = group.get("Instances", [])
        if target.instance_id is not None:
            instances = [i for i in instances if i.get("InstanceId") == target.instance_id]
        checks = {
            str(i.get("InstanceId")): i.get("HealthStatus") == "Healthy"
            and i.get("LifecycleState") == "InService"
            for i in instances
        }
        return HealthReport(host=host, healthy=bool(checks) and all(checks.values()), checks=checks)
