"""terraform/: every file parses (python-hcl2), checkov finds nothing, and the design holds.

No Terraform CLI or AWS account is assumed (NOTES.md): the configuration is checked by
parsing it, by checkov's policy scan, and by rendering the user-data templates for shellcheck.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions
from infra_helpers import REPO, tool

TF = REPO / "terraform"
TF_FILES = sorted(TF.glob("*.tf"))
# python-hcl2 8 keeps HCL's quotes by default; plain strings read better in assertions.
HCL_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


@cache
def parsed() -> dict[str, dict[str, Any]]:
    out = {}
    for path in [*TF_FILES, TF / "backend.tf.example"]:
        with path.open(encoding="utf-8") as handle:
            out[path.name] = hcl2.load(handle, serialization_options=HCL_OPTIONS)
    return out


def blocks(kind: str) -> dict[str, dict[str, Any]]:
    """All ``resource``/``data`` blocks as ``{"type.name": body}``."""
    found: dict[str, dict[str, Any]] = {}
    for doc in parsed().values():
        for entry in doc.get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    found[f"{rtype}.{name}"] = body
    return found


def resources(rtype: str) -> dict[str, dict[str, Any]]:
    return {k.split(".", 1)[1]: v for k, v in blocks("resource").items() if k.startswith(f"{rtype}.")}


def variables() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in parsed().values():
        for entry in doc.get("variable", []):
            out.update(entry)
    return out


def test_every_file_parses_and_the_expected_files_exist() -> None:
    names = {p.name for p in TF_FILES}
    assert {
        "versions.tf",
        "variables.tf",
        "network.tf",
        "security.tf",
        "compute.tf",
        "iam.tf",
        "s3.tf",
        "ssm.tf",
        "outputs.tf",
    } <= names
    assert all(isinstance(doc, dict) for doc in parsed().values())


def test_provider_region_and_optional_s3_backend() -> None:
    region = variables()["region"]
    assert region["default"] == "us-east-1"
    providers = [p for doc in parsed().values() for p in doc.get("provider", [])]
    aws = next(p["aws"] for p in providers if "aws" in p)
    assert aws["region"] == "${var.region}"
    # Optional: no backend in the .tf files (local state), an S3 one ready to copy in.
    assert not any(
        "backend" in t
        for doc in parsed().values()
        if doc is not parsed()["backend.tf.example"]
        for t in doc.get("terraform", [])
    )
    backend = parsed()["backend.tf.example"]["terraform"][0]["backend"][0]["s3"]
    assert backend["encrypt"] is True


def test_variables_have_descriptions_and_validation() -> None:
    for name, body in variables().items():
        assert body.get("description"), f"variable {name} has no description"
        # A free-form secret cannot be validated meaningfully; everything else is.
        if not body.get("sensitive"):
            assert body.get("validation"), f"variable {name} has no validation block"


def test_network_layout() -> None:
    vpc = resources("aws_vpc")["main"]
    assert variables()["vpc_cidr"]["default"] == "10.0.0.0/16" and vpc["cidr_block"] == "${var.vpc_cidr}"
    assert variables()["public_subnet_cidrs"]["default"] == ["10.0.1.0/24", "10.0.2.0/24"]
    subnet = resources("aws_subnet")["public"]
    assert subnet["count"] == 2
    assert "availability_zones.available.names[count.index]" in subnet["availability_zone"]
    assert "aws_internet_gateway" in {k.split(".")[0] for k in blocks("resource")}
    route = resources("aws_route")["internet"]
    assert (
        route["destination_cidr_block"] == "0.0.0.0/0" and "aws_internet_gateway.main" in route["gateway_id"]
    )
    assert resources("aws_route_table_association")["public"]["count"] == 2
    # two distinct zones, pinned by name
    zones = blocks("data")["aws_availability_zones.available"]
    assert zones["filter"][0]["name"] == "zone-name"


def _ingress() -> dict[str, dict[str, Any]]:
    return resources("aws_vpc_security_group_ingress_rule")


def test_ssh_only_from_the_admin_cidr_and_nothing_open_to_the_world() -> None:
    rules = _ingress()
    ssh = {name: r for name, r in rules.items() if r.get("from_port") == 22}
    assert set(ssh) == {"monitoring_ssh", "application_ssh"}
    assert all(r["cidr_ipv4"] == "${var.admin_cidr}" and r["to_port"] == 22 for r in ssh.values())
    for name, rule in rules.items():
        assert rule.get("cidr_ipv4") != "0.0.0.0/0", f"ingress {name} is open to the internet"
        assert rule.get("description"), f"ingress {name} has no description"
        assert rule["from_port"] == rule["to_port"], f"ingress {name} opens a port range"
    admin = variables()["admin_cidr"]
    assert "default" not in admin, "the admin CIDR must be chosen, not defaulted"
    assert "0.0.0.0/" in admin["validation"][0]["condition"]


def test_each_service_port_is_opened_only_to_who_needs_it() -> None:
    rules = _ingress()
    ports = set()
    for rule in rules.values():
        if rule["from_port"] == "${each.value}" and isinstance(rule["for_each"], dict):
            ports.update(rule["for_each"].values())  # {name = port} maps
        elif isinstance(rule["from_port"], int):
            ports.add(rule["from_port"])
    # 22 SSH, 80 ChatOps via nginx, 3000 Grafana, 9090 Prometheus, 9100 node_exporter, plus the
    # scrape targets and the event store for Grafana.
    assert {22, 80, 3000, 9090, 9100} <= ports
    assert rules["monitoring_grafana"]["cidr_ipv4"] == "${each.value}"
    assert rules["application_http"]["cidr_ipv4"] == "${each.value}"
    assert "web_ingress_cidrs" in rules["monitoring_grafana"]["for_each"]
    assert rules["monitoring_prometheus_admin"]["cidr_ipv4"] == "${var.admin_cidr}"
    # node_exporter, scoring, ChatOps and PostgreSQL: from the monitoring host's group only
    from_monitoring = rules["application_from_monitoring"]
    assert "aws_security_group.monitoring.id" in from_monitoring["referenced_security_group_id"]
    assert from_monitoring["for_each"] == {
        "node_exporter": 9100,
        "scoring": 8080,
        "chatops": 8090,
        "events_db": 5432,
    }
    # the default group is locked: no rules at all
    default = resources("aws_default_security_group")["default"]
    assert "ingress" not in default and "egress" not in default


def test_instances_require_imdsv2_encrypt_volumes_and_have_user_data() -> None:
    instances = resources("aws_instance")
    assert set(instances) == {"monitoring", "application"}
    for name, inst in instances.items():
        meta = inst["metadata_options"][0]
        assert meta["http_tokens"] == "required", f"{name}: IMDSv2 not required"
        root = inst["root_block_device"][0]
        assert root["encrypted"] is True, f"{name}: root volume not encrypted"
        assert "aws_kms_key.main" in root["kms_key_id"]
        assert "user_data" in inst["user_data"], f"{name}: no user data"
        assert "aws_iam_instance_profile" in inst["iam_instance_profile"]
        assert inst["associate_public_ip_address"] is False  # Elastic IPs instead
    assert set(resources("aws_eip")) == {"monitoring", "application"}


def test_user_data_templates_get_exactly_the_variables_they_use() -> None:
    import sys

    sys.path.insert(0, str(REPO / "deploy" / "lint"))
    from check_shell import template_variables

    compute = (TF / "compute.tf").read_text(encoding="utf-8")
    for template in sorted((TF / "templates").glob("*.sh.tftpl")):
        call = re.search(
            rf'templatefile\("\$\{{path\.module\}}/templates/{re.escape(template.name)}", \{{(.*?)\}}\)',
            compute,
            re.S,
        )
        assert call, f"{template.name} is not rendered in compute.tf"
        passed = set(re.findall(r"^\s*([a-z_]+)\s*=", call.group(1), re.M))
        used = template_variables(template.read_text(encoding="utf-8"))
        assert used == passed, (
            f"{template.name}: uses {sorted(used - passed)} not passed; passes unused {sorted(passed - used)}"
        )
        text = template.read_text(encoding="utf-8")
        assert "password" not in text.lower().replace("_password", ""), (
            "no secret may be written into user data"
        )


def test_user_data_renders_to_clean_shell() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed; install it with: apt-get install shellcheck"
    import sys

    sys.path.insert(0, str(REPO / "deploy" / "lint"))
    from check_shell import render_template

    for template in sorted((TF / "templates").glob("*.sh.tftpl")):
        script = render_template(template.read_text(encoding="utf-8"))
        proc = subprocess.run(
            [shellcheck, "-s", "bash", "-"], input=script, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{template.name}:\n{proc.stdout}"


def _statements(policy: str) -> list[dict[str, Any]]:
    body = blocks("data")[f"aws_iam_policy_document.{policy}"]
    return list(body["statement"])


def test_application_policy_is_least_privilege() -> None:
    statements = {s["sid"]: s for s in _statements("application")}
    for sid, st in statements.items():
        assert not any(a.endswith("*") for a in st["actions"]), f"{sid}: wildcard action"
        assert st.get("effect", "Allow") == "Allow"
    # S3: the two prefixes only
    assert statements["MetricPartitions"]["resources"] == [
        "${aws_s3_bucket.data.arn}/${local.metrics_prefix}/*"
    ]
    assert statements["MlflowArtifacts"]["resources"] == [
        "${aws_s3_bucket.data.arn}/${local.mlflow_prefix}/*"
    ]
    assert "s3:DeleteObject" not in statements["MetricPartitions"]["actions"]
    assert statements["ListOnlyOurPrefixes"]["condition"][0]["variable"] == "s3:prefix"
    # SSM parameters: the app's own path
    assert all(
        "ssm_app_path" in r or "grafana_db_reader_password" in r
        for r in statements["ReadOwnSecrets"]["resources"]
    )
    # remediation: exactly what remediation/actions.py declares, scaling and commands limited by tag
    from remediation import actions as remediation_actions

    declared = {
        p
        for cls in vars(remediation_actions).values()
        if isinstance(cls, type) and issubclass(cls, remediation_actions.Action)
        for p in cls.permissions
    }
    granted = {
        a
        for st in statements.values()
        for a in st["actions"]
        if a.split(":")[0] in {"autoscaling", "ssm", "ec2"} and not a.startswith("ssm:GetParameter")
    }
    assert granted == declared, (
        f"granted {sorted(granted - declared)} beyond, missing {sorted(declared - granted)}"
    )
    scale = statements["RemediationScaleTaggedGroupsOnly"]
    assert scale["condition"][0]["variable"].startswith("autoscaling:ResourceTag/")
    assert "autoScalingGroupName/${var.remediation_asg_prefix}*" in scale["resources"][0]
    on_instances = statements["RemediationOnTaggedInstancesOnly"]
    assert on_instances["condition"][0]["variable"].startswith("ssm:resourceTag/")
    assert statements["RemediationRunTheShellDocument"]["resources"][0].endswith(
        "document/AWS-RunShellScript"
    )
    # Describe-style calls are the only ones on "*"
    for sid, st in statements.items():
        if st["resources"] == ["*"]:
            assert sid == "RemediationDescribe", f"{sid} uses Resource *"


def test_monitoring_policy_reads_only_its_own_secrets() -> None:
    statements = _statements("monitoring")
    actions = {a for st in statements for a in st["actions"]}
    assert actions == {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "kms:Decrypt"}
    reads = next(st for st in statements if st["sid"] == "ReadOwnSecrets")
    assert all("ssm_monitoring_path" in r for r in reads["resources"])


def test_bucket_is_encrypted_versioned_and_private() -> None:
    assert resources("aws_s3_bucket_versioning")["data"]["versioning_configuration"][0]["status"] == "Enabled"
    sse = resources("aws_s3_bucket_server_side_encryption_configuration")["data"]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    pab = resources("aws_s3_bucket_public_access_block")["data"]
    assert all(
        pab[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    assert resources("aws_kms_key")["main"]["enable_key_rotation"] is True


def test_secrets_are_securestring_parameters() -> None:
    params = resources("aws_ssm_parameter")
    assert params, "no SSM parameters"
    for name, param in params.items():
        assert param["type"] == "SecureString", f"{name} is not a SecureString"
        assert "aws_kms_key.main" in param["key_id"]


def test_outputs_give_the_urls() -> None:
    outputs: dict[str, Any] = {}
    for doc in parsed().values():
        for entry in doc.get("output", []):
            outputs.update(entry)
    for name in ("grafana_url", "prometheus_url", "chatops_url"):
        assert name in outputs and outputs[name]["value"].startswith("http://"), name
        assert outputs[name].get("description")
    assert ":3000" in outputs["grafana_url"]["value"] and ":9090" in outputs["prometheus_url"]["value"]


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    proc = subprocess.run(
        [tool("checkov"), "-d", str(TF), "--framework", "terraform", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return report


def test_checkov_finds_no_failed_check(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = checkov_report["results"]["failed_checks"]
    assert summary["failed"] == 0, "\n".join(
        f"{c['check_id']} {c['resource']} {c['file_path']}" for c in failed
    )
    assert summary["passed"] > 100  # it really scanned the configuration


def test_every_skipped_check_is_inline_with_a_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    inline = re.compile(r"#checkov:skip=(CKV2?_AWS_\d+):(.+)")
    written = {}
    for path in TF_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = inline.search(line)
            if match:
                assert len(match.group(2).strip()) > 20, (
                    f"{path.name}: skip of {match.group(1)} needs a real reason"
                )
                written.setdefault(match.group(1), 0)
                written[match.group(1)] += 1
    for check in skipped:
        assert check["check_id"] in written, f"{check['check_id']} skipped without an inline reason"
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} has no reason"
    assert sum(written.values()) == len(skipped) == checkov_report["summary"]["skipped"]


def test_terraform_is_formatted_when_the_cli_is_here() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        # NOTES.md: no Terraform CLI on these machines; infra.yml runs `terraform fmt -check`.
        return
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TF_CLI_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, f"terraform fmt would change: {proc.stdout}"


def test_no_stray_files() -> None:
    # state or provider caches must never be committed next to the configuration
    leftovers = [p.name for p in TF.iterdir() if p.name.startswith((".terraform", "terraform.tfstate"))]
    assert not leftovers, leftovers
