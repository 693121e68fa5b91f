"""Slack slash commands: request signing, the form body, and Slack's message format.

Slack signs every request it sends (https://api.slack.com/authentication/verifying-requests-from-slack):
``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}")>`` and
``X-Slack-Request-Timestamp: <unix seconds>``. We recompute the HMAC over the *raw* bytes
(re-encoding the parsed form would not reproduce them), compare in constant time, refuse
timestamps outside a five-minute window (replays of an old, captured request), and also
refuse the same signature twice inside that window (a replay of a fresh one).

Everything here is pure (no Flask): the route in :mod:`chatops.app` wires it up.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from chatops.intents import WRITE_INTENTS
from chatops.tools import Evidence

REPLAY_WINDOW_SECONDS = 300
SIGNATURE_VERSION = "v0"
#: Slack's limits: 3000 characters of text per section, 50 blocks per message.
MAX_SECTION_CHARS = 3000
MAX_BLOCKS = 50
MAX_EVIDENCE_BLOCKS = 8
MAX_ROWS_PER_EVIDENCE = 8
MAX_ROW_CHARS = 300  # so eight rows and the header fit one section
#: Fields a slash command body must carry to be answered (identity and the text).
REQUIRED_FIELDS = ("team_id", "user_id", "text")
MAX_FIELD_CHARS = 4000


class SlackRequestError(Exception):
    """A Slack request we refuse; ``status``/``code``/``field`` become the JSON error."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


# ---------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------

def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """``v0=<hex>`` for one request, exactly as Slack computes it (tests and the bench use it)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(key, base, hashlib.sha256).hexdigest()


def check_timestamp(header: str | None, now: float, window_seconds: float = REPLAY_WINDOW_SECONDS) -> str:
    """The timestamp header, validated; raises SlackRequestError (401) when missing, malformed
    or outside the replay window. Checked *before* the body is read: a stale request costs nothing."""
    if header is None or not header.strip():
        raise SlackRequestError(401, "unauthorized", "missing X-Slack-Request-Timestamp header",
                                "X-Slack-Request-Timestamp")
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 12:  # "²".isdigit() is True
        raise SlackRequestError(401, "unauthorized",
                                "X-Slack-Request-Timestamp must be whole seconds since the epoch",
                                "X-Slack-Request-Timestamp")
    if abs(now - int(value)) > window_seconds:
        raise SlackRequestError(401, "stale_request",
                                f"request timestamp is more than {int(window_seconds)} s from the server "
                                "clock (a replay, or a clock out of sync)", "X-Slack-Request-Timestamp")
    return value


def verify_signature(secret: str | bytes, timestamp: str, body: bytes, signature: str | None) -> None:
    """Raise SlackRequestError (401) unless ``signature`` is Slack's v0 HMAC of this request."""
    if signature is None or not signature.strip():
        raise SlackRequestError(401, "unauthorized", "missing X-Slack-Signature header", "X-Slack-Signature")
    given = signature.strip().encode("ascii", "replace")
    expected = sign(secret, timestamp, body).encode("ascii")
    # compare_digest on equal-typed bytes: time does not depend on where they first differ.
    if not hmac.compare_digest(expected, given):
        raise SlackRequestError(401, "unauthorized", "invalid X-Slack-Signature", "X-Slack-Signature")


class ReplayGuard:
    """Remembers signatures seen inside the replay window; a second use is refused.

    In memory per process by default. With ``redis_client`` the check is ``SET NX EX`` in
    Redis, so every worker shares it; if Redis fails we fall back to the local memory rather
    than refusing Slack (the timestamp window still bounds replays).
    """

    def __init__(self, window_seconds: float = REPLAY_WINDOW_SECONDS, *, redis_client: Any = None,
                 prefix: str = "smartcloudops:chatops:slack-seen:", max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_seconds = window_seconds
        self.redis = redis_client
        self.prefix = prefix
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, signature: str) -> bool:
        """True the first time a signature is presented (and records it), False after."""
        key = hashlib.sha256(signature.encode("utf-8", "replace")).hexdigest()
        if self.redis is not None:
            import redis

            try:
                # Twice the window: a request signed at the window's far edge stays refused.
                return bool(self.redis.set(self.prefix + key, b"1", nx=True,
                                           ex=int(self.window_seconds * 2)))
            except redis.RedisError:
                pass  # fall through to the per-process memory
        now = self._clock()
        with self._lock:
            while self._seen:
                oldest_key, expires = next(iter(self._seen.items()))
                if expires > now and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return False
            self._seen[key] = now + self.window_seconds * 2
            return True


# ---------------------------------------------------------------------------------------
# The slash command body
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlashCommand:
    team_id: str
    user_id: str
    text: str
    command: str = ""
    channel_id: str = ""
    user_name: str = ""
    ssl_check: bool = False

    @property
    def caller(self) -> str:
        """Who asked, as recorded for approvals: Slack's stable ids, not the display name."""
        return f"slack-{self.team_id}-{self.user_id}"

    @property
    def session_id(self) -> str:
        """One conversation per user and channel, so "and on db-1?" works in Slack too."""
        return f"slack-{self.channel_id or 'dm'}"


def parse_command(body: bytes) -> SlashCommand:
    """Parse a form-encoded slash command body; SlackRequestError (400) names what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SlackRequestError(400, "malformed_body", f"body is not UTF-8: {exc.reason}", "body") from exc
    if not text.strip():
        raise SlackRequestError(400, "malformed_body", "body is empty; expected a form-encoded slash "
                                "command", "body")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=64,
                          errors="strict")
    except ValueError as exc:
        raise SlackRequestError(400, "malformed_body",
                                f"body is not a form-encoded slash command: {exc}", "body") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise SlackRequestError(400, "malformed_body", f"field {name!r} is given twice", name)
        fields[name] = value
    if fields.get("ssl_check") == "1":
        return SlashCommand(team_id="", user_id="", text="", ssl_check=True)
    for name in REQUIRED_FIELDS:
        if name not in fields:
            raise SlackRequestError(400, "missing_field", f"slash command field {name!r} is missing", name)
    for name in ("team_id", "user_id", "channel_id"):
        value = fields.get(name, "")
        if value and not (len(value) <= 64 and value.isascii() and value.replace("_", "").isalnum()):
            raise SlackRequestError(400, "invalid_value", f"{name!r} is not a Slack id", name)
    for name, value in fields.items():
        if len(value) > MAX_FIELD_CHARS:
            raise SlackRequestError(400, "too_long", f"field {name!r} is longer than {MAX_FIELD_CHARS} "
                                    "characters", name)
    if not fields["team_id"] or not fields["user_id"]:
        raise SlackRequestError(400, "missing_field", "team_id and user_id must not be empty",
                                "user_id" if fields["team_id"] else "team_id")
    return SlashCommand(
        team_id=fields["team_id"], user_id=fields["user_id"], text=fields["text"],
        command=fields.get("command", ""), channel_id=fields.get("channel_id", ""),
        user_name=fields.get("user_name", ""),
    )


# ---------------------------------------------------------------------------------------
# Slack's message format
# ---------------------------------------------------------------------------------------

def escape(text: str) -> str:
    """Slack's three control characters. Escaped in everything we echo, so text from a log
    line or the question itself cannot become a link, a mention or ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = MAX_SECTION_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(text: str) -> str:
    # Inline code cannot contain a backtick; a lookalike keeps the text readable.
    return "`" + escape(text).replace("`", "ˋ") + "`"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in list(value.items())[:6])
    return str(value)


_ROW_KEYS = ("host", "metric", "value", "min", "mean", "max", "last", "unit", "severity", "score",
             "top_metric", "action_id", "action", "instance", "result", "level", "component", "message",
             "version", "f1", "trained_at", "timestamp", "median", "anomaly_id")


def _row(row: Any) -> str:
    if not isinstance(row, Mapping):
        return escape(_scalar(row))
    keys = [k for k in _ROW_KEYS if row.get(k) not in (None, "", {})] or list(row)[:6]
    return escape(_clip(" · ".join(f"{k}={_scalar(row[k])}" for k in keys[:8]), MAX_ROW_CHARS))


def evidence_block(ev: Evidence) -> dict[str, Any]:
    window = ""
    if ev.get("window_start") or ev.get("window_end"):
        window = f"\n_window (UTC)_: {escape(str(ev.get('window_start') or '…'))} → " \
                 f"{escape(str(ev.get('window_end') or '…'))}"
    lines = [f"*{escape(str(ev.get('source', '?')))}* {_code(str(ev.get('query', '')))}{window}"]
    values: Sequence[Any] = ev.get("values") or []
    if ev.get("error"):
        lines.append(escape(str(ev["error"])))
    elif not values:
        lines.append("no data")
    else:
        lines.extend("• " + _row(v) for v in values[:MAX_ROWS_PER_EVIDENCE])
        if len(values) > MAX_ROWS_PER_EVIDENCE:
            lines.append(f"… and {len(values) - MAX_ROWS_PER_EVIDENCE} more")
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}}


def to_message(result: Mapping[str, Any]) -> dict[str, Any]:
    """A /query result as a Slack message: the answer, what was understood, the evidence.

    Decisions (approve/reject) and labels go ``in_channel`` so the team sees who decided or
    labelled what; everything else is ``ephemeral`` -- only the asker sees it, as with any
    lookup.
    """
    intent = str(result.get("intent", "unknown"))
    answer = escape(str(result.get("answer", "")))
    params = result.get("params") or {}
    understood = f"intent {_code(intent)}"
    if params:
        understood += " · " + " ".join(_code(f"{k}={v}") for k, v in sorted(params.items()))
    llm_info = result.get("llm") or {}
    if llm_info.get("used"):
        understood += f" · rephrased by {_code(str(llm_info.get('model')))}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(answer)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(understood)}]},
    ]
    evidence: Sequence[Evidence] = result.get("evidence") or []
    if evidence:
        blocks.append({"type": "divider"})
        blocks.extend(evidence_block(ev) for ev in evidence[:MAX_EVIDENCE_BLOCKS])
    return {
        "response_type": "in_channel" if intent in WRITE_INTENTS else "ephemeral",
        "text": _clip(answer),  # the fallback for notifications and old clients
        "blocks": blocks[:MAX_BLOCKS],
    }


def notice(text: str) -> dict[str, Any]:
    """A short ephemeral reply (too long, rate limited): Slack shows it only to the asker."""
    safe = escape(text)
    return {"response_type": "ephemeral", "text": safe,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": _clip(safe)}}]}
