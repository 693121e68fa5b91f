"""The local-process adapter (allowlisted argv, never a shell) and the AWS adapter against
moto's server mode over HTTP on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import aws_test_credentials, moto_server

from remediation.actions import Target, get_action, validate_params
from remediation.adapters.aws import AwsAdapter, AwsTarget
from remediation.adapters.local import LocalProcessAdapter
from remediation.executor import ActionExecutor
from smartcloudops.audit import AuditLog
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import ActionError
from smartcloudops.events import EventStore

# -- local processes ---------------------------------------------------------------------------


def _local(tmp_path: Path, **kwargs: Any) -> LocalProcessAdapter:
    marker = tmp_path / "restarted"
    allowlist = {
        "restart_service": {
            "app": [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"],
            "broken": [sys.executable, "-c", "import sys; sys.stderr.write('unit failed'); sys.exit(3)"],
            "slow": [sys.executable, "-c", "import time; time.sleep(5)"],
        },
        "health": {
            "app": [sys.executable, "-c", "pass"],
            "down": [sys.executable, "-c", "raise SystemExit(1)"],
        },
    }
    return LocalProcessAdapter(allowlist, hosts=["localhost"], **kwargs)


def test_local_adapter_runs_only_allowlisted_argv(tmp_path: Path) -> None:
    adapter = _local(tmp_path)
    adapter.restart_service("localhost", "app")
    assert (tmp_path / "restarted").read_text() == "x"
    refused = r"restart_service of 'nginx' is not in the allowlist \(allowed: app, broken, slow\)"
    with pytest.raises(ActionError, match=refused):
        adapter.restart_service("localhost", "nginx")
    with pytest.raises(ActionError, match="unknown host 'web-1'"):
        adapter.restart_service("web-1", "app")
    assert adapter.health("localhost", "app").healthy
    assert not adapter.health("localhost", "down").healthy


def test_local_adapter_reports_failures_and_timeouts(tmp_path: Path) -> None:
    adapter = _local(tmp_path, timeout_seconds=0.5)
    with pytest.raises(ActionError, match="exited 3: unit failed"):
        adapter.restart_service("localhost", "broken")
    with pytest.raises(ActionError, match="timed out"):
        adapter.restart_service("localhost", "slow")
    with pytest.raises(ActionError, match="cannot scale"):
        adapter.scale_up("localhost", 1, max_capacity=3)


def test_local_adapter_refuses_shell_strings() -> None:
    with pytest.raises(ActionError, match="never a shell string"):
        LocalProcessAdapter({"restart_service": {"app": "systemctl restart app"}})  # type: ignore[dict-item]


# -- AWS on moto's server mode ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in aws_test_credentials().items():
        monkeypatch.setenv(name, value)
    autoscaling = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=moto_url)
    name = f"web-asg-{id(autoscaling)}"
    autoscaling.create_launch_configuration(
        LaunchConfigurationName=name, ImageId="ami-12c6146b", InstanceType="t2.micro"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchConfigurationName=name, MinSize=1, MaxSize=4,
        DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    instance_id = group["Instances"][0]["InstanceId"]
    adapter = AwsAdapter({"web-1": AwsTarget(asg=name, instance_id=instance_id)}, endpoint_url=moto_url)
    return {"adapter": adapter, "asg": name, "instance_id": instance_id, "url": moto_url}


def test_aws_scale_up_is_bounded_by_the_action_and_the_group(aws: dict[str, Any]) -> None:
    adapter: AwsAdapter = aws["adapter"]
    assert adapter.capacity("web-1") == 2
    assert adapter.scale_up("web-1", 1, max_capacity=10) == 3
    assert adapter.scale_up("web-1", 5, max_capacity=10) == 4  # the group's MaxSize
    assert adapter.capacity("web-1") == 4
    assert adapter.scale_down("web-1", 10, min_capacity=1) == 1
    action = get_action("scale_up")(adapter)
    params = validate_params("scale_up", {"replicas": 3, "max_capacity": 2})
    outcome = action.execute(Target("web-1"), params)
    assert outcome.data == {"capacity_before": 1, "capacity_after": 2}


def test_aws_restart_sends_an_ssm_command(aws: dict[str, Any]) -> None:
    adapter: AwsAdapter = aws["adapter"]
    adapter.restart_service("web-1", "app")
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws["url"])
    [command] = [
        c for c in ssm.list_commands()["Commands"] if aws["instance_id"] in c.get("InstanceIds", [])
    ]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Parameters"]["commands"] == ["systemctl restart app"]
    assert adapter.health("web-1").healthy


def test_aws_errors_become_failed_audited_actions(aws: dict[str, Any], tmp_path: Path) -> None:
    adapter = AwsAdapter({"web-9": AwsTarget(asg="no-such-group")}, endpoint_url=aws["url"])
    with pytest.raises(ActionError, match="does not exist"):
        adapter.capacity("web-9")
    events = EventStore(f"sqlite:///{tmp_path / 'ev.db'}")
    execution = ActionExecutor(adapter, events, AuditLog(tmp_path / "audit"), dry_run=False).run(
        "restart_service", "web-9"
    )
    events.close()
    assert execution.record.result is ActionStatus.FAILED
    assert "no instance id" in execution.record.detail
