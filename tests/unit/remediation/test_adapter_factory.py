"""Real adapters chosen by settings (``SMARTCLOUDOPS_REMEDIATION_ADAPTER``) and their config
file's errors, each naming the variable and the problem."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remediation.adapters.aws import AwsAdapter, AwsTarget
from remediation.adapters.factory import adapter_from_settings
from remediation.adapters.local import LocalProcessAdapter
from remediation.engine import RemediationEngine
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import ConfigError
from smartcloudops.settings import Settings


def test_local_adapter_from_settings_runs_an_allowlisted_argv(tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    config = tmp_path / "adapter.yaml"
    script = f"open({str(marker)!r}, 'a').write('x')"
    config.write_text(
        "hosts: [box-1]\n"
        "timeout_seconds: 10\n"
        "allowlist:\n"
        f"  restart_service: {{app: [{sys.executable!r}, '-c', {script!r}]}}\n"
        f"  health: {{app: [{sys.executable!r}, '-c', 'pass']}}\n"
    )
    settings = Settings(
        home=tmp_path / "home", remediation_adapter="local", remediation_adapter_config=config,
        dry_run=False,
    )
    engine = RemediationEngine.from_settings(settings)
    assert isinstance(engine.adapter, LocalProcessAdapter) and engine.adapter.hosts() == ["box-1"]
    record, verification = engine.run_action("restart_service", "box-1", {"service": "app"}, by="ops")
    assert record.result is ActionStatus.SUCCEEDED and marker.read_text() == "x"
    assert verification is not None and verification.verified


def test_local_adapter_defaults_to_systemd_on_this_host(tmp_path: Path) -> None:
    adapter = adapter_from_settings(Settings(home=tmp_path, remediation_adapter="local"))
    assert isinstance(adapter, LocalProcessAdapter)
    assert adapter.allowlist["restart_service"]["app"] == ["systemctl", "restart", "app.service"]


def test_aws_adapter_from_settings(tmp_path: Path) -> None:
    config = tmp_path / "aws.yaml"
    config.write_text("targets:\n  web-1: {asg: web-asg, instance_id: i-0abc}\n  db-1: {asg: db-asg}\n")
    settings = Settings(
        home=tmp_path, remediation_adapter="aws", remediation_adapter_config=config,
        remediation_aws_endpoint_url="http://127.0.0.1:1", aws_region="eu-west-1",
    )
    adapter = adapter_from_settings(settings)  # connects to nothing yet
    assert isinstance(adapter, AwsAdapter)
    assert adapter.targets == {"web-1": AwsTarget("web-asg", "i-0abc"), "db-1": AwsTarget("db-asg")}
    assert (adapter.region, adapter.endpoint_url) == ("eu-west-1", "http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("kind", "text", "named"),
    [
        ("aws", None, "needs SMARTCLOUDOPS_REMEDIATION_ADAPTER_CONFIG"),
        ("aws", "targets: {}\n", "'targets' must map"),
        ("aws", "targets: {web-1: {instance_id: i-1}}\n", "needs an 'asg'"),
        ("aws", "targets: {web-1: {asg: a, zone: b}}\n", "unknown field(s) zone"),
        ("aws", "tragets: {}\n", "unknown field(s) tragets; valid: targets"),
        ("local", "allowlist: {restart_service: {app: 'systemctl restart app'}}\n", "never a shell string"),
        ("local", "hosts: web-1\n", "'hosts' must be a list"),
        ("local", "timeout_seconds: -1\n", "'timeout_seconds'"),
        ("local", "[unclosed\n", "not valid YAML"),
    ],
)
def test_bad_adapter_config_is_a_named_config_error(
    tmp_path: Path, kind: str, text: str | None, named: str
) -> None:
    config = None
    if text is not None:
        config = tmp_path / "adapter.yaml"
        config.write_text(text)
    settings = Settings(home=tmp_path, remediation_adapter=kind, remediation_adapter_config=config)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        RemediationEngine.from_settings(settings)
    assert named in str(info.value)
    assert "SMARTCLOUDOPS_REMEDIATION_ADAPTER_CONFIG" in str(info.value)


def test_missing_adapter_config_file(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, remediation_adapter="local", remediation_adapter_config=tmp_path / "nope.yaml"
    )
    with pytest.raises(ConfigError, match=r"nope\.yaml not found"):
        adapter_from_settings(settings)
