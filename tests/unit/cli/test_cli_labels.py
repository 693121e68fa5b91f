"""``smartcloudops labels add|list|delete``: what is stored, clear errors, exit codes."""

from __future__ import annotations

import json

import pytest

from smartcloudops.cli import main

WINDOW = ["--host", "web-1", "--start", "2026-01-14T10:00:00Z", "--end", "2026-01-14T10:30:00+00:00"]


def test_add_list_delete(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "add", *WINDOW, "--kind", "incident", "--note", "checkout down",
                 "--author", "alice"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("stored lbl-")
    assert "web-1 2026-01-14T10:00:00Z .. 2026-01-14T10:30:00Z incident by alice" in first
    label_id = first.split()[1].rstrip(":")

    assert main(["labels", "add", *WINDOW, "--kind", "incident"]) == 0  # idempotent
    assert capsys.readouterr().out.startswith(f"already stored {label_id}:")

    assert main(["labels", "add", "--host", "db-1", "--start", "2026-01-14T11:00", "--end",
                 "2026-01-14T11:10", "--kind", "false_alarm"]) == 0
    author = capsys.readouterr().out.split(" by ", 1)[1].strip()
    assert author.startswith("cli")

    assert main(["labels", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 labels" and "checkout down" in lines[1]
    assert main(["labels", "list", "--json", "--host", "web-1"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["label_id"], record["note"], record["author"]) == (label_id, "checkout down", "alice")
    assert main(["labels", "list", "--kind", "false_alarm", "--since", "2026-01-14T11:05:00Z"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 label"

    assert main(["labels", "delete", label_id]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {label_id}"
    assert main(["labels", "delete", label_id]) == 2
    assert f"no label '{label_id}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["labels", "add", "--host", "web 1", "--start", "2026-01-14T10:00", "--end", "2026-01-14T10:30",
          "--kind", "incident"], "host: must be a host name"),
        (["labels", "add", *WINDOW[:3], "yesterday", *WINDOW[4:], "--kind", "incident"],
         "start: is not an ISO"),
        (["labels", "add", *WINDOW[:5], "2026-01-14T09:00", "--kind", "incident"],
         "end: must be after start"),
        (["labels", "add", *WINDOW[:5], "2099-01-01T00:00", "--kind", "incident"], "window is longer"),
        (["labels", "add", *WINDOW, "--kind", "incident", "--note", "x" * 501], "note: is 501 characters"),
        (["labels", "add", *WINDOW, "--kind", "incident", "--anomaly-id", "nope"], "anomaly_id: must be"),
        (["labels", "list", "--since", "soon"], "since: is not an ISO"),
        (["labels", "delete", "x; drop table labels"], "label_id: must be a label id"),
    ],
)
def test_bad_input_exits_2_naming_the_field(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["labels"], "required: ACTION"),
        (["labels", "add", "--host", "web-1"], "required"),
        (["labels", "add", *WINDOW, "--kind", "maybe"], "invalid choice"),
        (["labels", "list", "--limit", "0"], "must be >= 1"),
        (["labels", "rename"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
