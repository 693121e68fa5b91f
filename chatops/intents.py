"""Deterministic understanding of operator questions: text -> intent + parameters.

No LLM is involved, so the same words always mean the same thing and an answer can be
traced to the rule that produced it. The pipeline, in order:

1. clean the text (control and format characters out, fancy quotes and dashes folded);
2. lift out things whose spelling must survive untouched: quoted strings, action ids,
   anomaly ids, ``containing X`` search terms, host names (``web-1``);
3. tokenise, fold number words into digits ("last ten" -> "last 10") and fix typos against
   the vocabulary the rules below use (Damerau-Levenshtein distance 1, 2 for long words);
4. find a time phrase ("past 2h", "10 minutes ago", "last day") -> ``since_minutes``;
5. find cues: metric synonyms, intent keywords, list sizes, log levels;
6. decide the intent by priority and keep only the parameters that intent takes.

Actions are special: ``remediation.approve`` / ``remediation.reject`` come only from a message
that *is* such a request -- an approve/reject verb, exactly one explicit action id, nothing
else but politeness or a reason -- and never from text that also tries to instruct the
assistant ("ignore previous instructions ..."). Anything near that line becomes ``unknown``
with a reply that says how to ask, so a pasted log line or a trick sentence cannot act.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from smartcloudops.domain import CANONICAL_METRICS

INTENTS: tuple[str, ...] = (
    "metric.current",
    "metric.history",
    "anomaly.summary",
    "anomaly.explain",
    "logs.search",
    "remediation.history",
    "remediation.approve",
    "remediation.reject",
    "label.add",
    "model.status",
    "status.overview",
    "help",
    "unknown",
)

#: Which parameters each intent takes; anything else the text mentioned is dropped so that
#: the response's ``params`` only ever holds what the intent actually used.
INTENT_PARAMS: dict[str, frozenset[str]] = {
    "metric.current": frozenset({"metric", "host"}),
    "metric.history": frozenset({"metric", "host", "since_minutes"}),
    "anomaly.summary": frozenset({"metric", "host", "limit", "since_minutes"}),
    "anomaly.explain": frozenset({"metric", "host", "limit", "since_minutes"}),
    "logs.search": frozenset({"host", "limit", "since_minutes", "level", "contains"}),
    "remediation.history": frozenset({"host", "limit", "since_minutes", "action_id"}),
    "remediation.approve": frozenset({"action_id"}),
    "remediation.reject": frozenset({"action_id"}),
    # ``kind`` is incident / false_alarm; ``start``/``end`` (a window) or ``at`` (a point) are
    # ISO 8601 UTC; without them the label is about an anomaly (by id, the latest, or the one
    # the previous answer showed).
    "label.add": frozenset({"host", "kind", "start", "end", "at", "anomaly_id"}),
    "model.status": frozenset(),
    "status.overview": frozenset({"host"}),
    "help": frozenset(),
    "unknown": frozenset(),
}

#: Intents whose answer is a list that "more" can continue.
LIST_INTENTS: frozenset[str] = frozenset(
    {"anomaly.summary", "anomaly.explain", "logs.search", "remediation.history"}
)
ACTION_INTENTS: frozenset[str] = frozenset({"remediation.approve", "remediation.reject"})
#: Intents that write something. Like actions they come only from the deterministic parser
#: (never from a follow-up merge or the LLM) and are never kept as context to continue.
WRITE_INTENTS: frozenset[str] = ACTION_INTENTS | {"label.add"}

LEVELS: tuple[str, ...] = ("info", "warning", "error")  # ascending, as read_logs orders them
MAX_SINCE_MINUTES = 366 * 24 * 60
MAX_LIMIT = 1000

Followup = Literal["refine", "more"] | None


@dataclass(frozen=True)
class ParsedQuery:
    """What one message says on its own, before any session context is applied.

    ``followup`` marks messages that only make sense after a previous turn ("and on db-1?",
    "more"); :mod:`chatops.sessions` merges them. ``refusal`` explains an ``unknown`` that was
    deliberately not turned into an action. ``anomaly_id`` is not a contract parameter but
    lets "explain anom-..." pick that anomaly.
    """

    intent: str
    params: dict[str, Any]
    followup: Followup = None
    refusal: str | None = None
    anomaly_id: str | None = None
    injection: bool = False
    corrections: dict[str, str] = field(default_factory=dict)
    #: Which cue decided the intent (for logs and debugging, not for the response).
    reason: str = ""
    #: Every parameter the text gave, before filtering by intent: a follow-up fragment
    #: ("and over the last hour?") has no intent of its own but still carries parameters.
    mentioned: dict[str, Any] = field(default_factory=dict)
    #: For approve/reject: the operator's stated reason ("reject act-1 because ..."), kept
    #: verbatim for the audit record; for a label, its note. Never a parameter, never
    #: interpreted.
    decision_note: str | None = None
    #: For ``label.add`` without a window or an id: ``"latest"`` (the newest anomaly, on the
    #: host if one is named) or ``"previous"`` ("that was ...": the anomaly the previous
    #: answer in this session showed).
    label_target: str | None = None


# ---------------------------------------------------------------------------------------
# Step 1: cleaning
# ---------------------------------------------------------------------------------------

_QUOTE_FOLD = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)


def clean_text(text: str) -> str:
    """Strip control and invisible format characters, fold look-alike punctuation.

    Tabs and newlines become spaces (a pasted multi-line question is still one question);
    zero-width and bidi-override characters are dropped because they make text look
    different from what the parser reads.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTE_FOLD)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f":
            kept.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(ch)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


# ---------------------------------------------------------------------------------------
# Vocabulary: synonyms and cue words. Typo correction targets exactly these words.
# ---------------------------------------------------------------------------------------

#: Phrase -> canonical metric. Longest phrases are matched first, so "cpu load" is cpu and
#: "free disk space" is disk before "load" or "free" alone get a say.
METRIC_SYNONYMS: dict[str, str] = {
    # cpu
    "cpu": "cpu", "cpus": "cpu", "processor": "cpu", "processors": "cpu", "proc": "cpu",
    "compute": "cpu", "cpu load": "cpu", "processor load": "cpu", "cores": "cpu",
    "core usage": "cpu", "cpu usage": "cpu", "cpu utilization": "cpu", "busy": "cpu",
    "cpu utilisation": "cpu", "processor usage": "cpu",
    # memory
    "memory": "memory", "mem": "memory", "ram": "memory", "heap": "memory",
    "memory usage": "memory", "swap": "memory",
    # disk
    "disk": "disk", "disks": "disk", "disc": "disk", "storage": "disk", "filesystem": "disk",
    "file system": "disk", "disk space": "disk", "free disk space": "disk", "free space": "disk",
    "space left": "disk", "root partition": "disk", "volume": "disk", "drive": "disk",
    "disk usage": "disk",
    # load
    "load": "load", "load average": "load", "loadavg": "load", "load avg": "load",
    "system load": "load", "run queue": "load",
    # network in
    "network_in": "network_in", "network in": "network_in", "net in": "network_in",
    "inbound": "network_in", "incoming": "network_in", "ingress": "network_in",
    "rx": "network_in", "received": "network_in", "download": "network_in",
    "bytes in": "network_in", "traffic in": "network_in", "bytes received": "network_in",
    # network out
    "network_out": "network_out", "network out": "network_out", "net out": "network_out",
    "outbound": "network_out", "outgoing": "network_out", "egress": "network_out",
    "tx": "network_out", "transmitted": "network_out", "upload": "network_out",
    "bytes out": "network_out", "traffic out": "network_out", "bytes sent": "network_out",
}
assert set(METRIC_SYNONYMS.values()) <= set(CANONICAL_METRICS)

#: Words that ask about metrics without naming one ("network traffic", "current metrics").
GENERIC_METRIC_WORDS = frozenset(
    {"metric", "metrics", "usage", "utilization", "utilisation", "network", "traffic",
     "bandwidth", "resources", "resource", "numbers", "throughput"}
)

#: Cue phrases per intent family. Multi-word phrases are matched on the token string.
CUES: dict[str, tuple[str, ...]] = {
    "explain": (
        "why", "explain", "explanation", "cause", "caused", "causing", "root cause",
        "reason for", "reason", "behind", "triggered", "trigger", "what made", "story",
        "investigate", "analyze", "analyse", "diagnose", "dig into",
        "tell me more about", "details of", "details on", "details about",
    ),
    "anomaly": (
        "anomaly", "anomalies", "anomalous", "alert", "alerts", "alerted", "alarm", "alarms",
        "incident", "incidents", "outlier", "outliers", "spike", "spikes", "spiked",
        "spiking", "unusual", "abnormal", "weird", "strange", "odd", "went wrong", "flag",
        "flagged", "flagging", "detected", "detections", "problems", "problem", "issues",
        "fired", "firing", "happened",
    ),
    "logs": (
        "log", "logs", "logged", "logging", "tail", "grep", "journal", "syslog",
        "exception", "exceptions", "traceback", "tracebacks", "stack trace", "errors",
        "error", "warnings", "warning", "warn", "log lines", "log entries", "messages",
    ),
    "remediation": (
        "remediation", "remediations", "remediate", "remediated", "action", "actions",
        "fix", "fixes", "fixed", "restart", "restarts", "restarted", "rebooted", "reboots",
        "scaled", "scaling", "scale up", "scale down", "approval", "approvals", "pending",
        "audit", "audit log", "audit trail", "what did you do", "what have you done",
        "auto heal", "healed", "runbook", "playbook", "mitigation", "mitigations",
        "approved", "rejected", "taken", "scale", "reboot", "auto scaled", "autoscaled",
    ),
    "model_strong": (
        "champion", "challenger", "f1", "f1 score", "precision", "recall", "accuracy",
        "mlflow", "registry", "trained", "training", "retrained", "model version",
        "isolation forest", "prophet",
    ),
    "model_weak": ("model", "models", "detector", "detectors", "ml"),
    "status": (
        "status", "overview", "health", "healthy", "unhealthy", "doing", "everything ok",
        "everything okay", "everything fine", "everything good", "all good", "sitrep",
        "dashboard", "going on", "fleet", "summary", "state of", "infrastructure",
        "how are things", "up and running", "everything", "alive", "online", "offline",
        "reachable", "__host__ up", "__host__ down", "hosts up", "hosts down",
    ),
    "history": (
        "history", "historical", "trend", "trending", "trends", "graph", "chart", "plot",
        "timeline", "over time", "was", "were", "been", "average", "avg", "mean", "peak",
        "max", "maximum", "min", "minimum", "highest", "lowest", "earlier", "yesterday",
        "changed", "change", "during", "looked like",
    ),
    "help": (
        "help", "what can you do", "how do i use", "how does this work", "commands",
        "what do you do", "capabilities", "usage help", "what can i ask", "hi", "hello",
        "hey", "howdy", "thanks", "thank you", "menu",
    ),
    # questions about the assistant itself win over the topic they mention
    "help_strong": (
        "how do i ask", "how can i ask", "how should i ask", "how to ask", "example questions",
        "examples", "what should i ask", "what can you do", "what can i ask", "how do i use",
        "what do you support", "what can you help with",
    ),
}

APPROVE_VERBS = frozenset(
    {"approve", "accept", "authorize", "authorise", "confirm", "allow", "greenlight", "lgtm"}
)
REJECT_VERBS = frozenset(
    {"reject", "deny", "decline", "refuse", "veto", "cancel", "abort", "dismiss", "block"}
)
#: Imperatives that would change the fleet. ChatOps never runs them from free text.
COMMAND_VERBS = frozenset(
    {"restart", "reboot", "scale", "kill", "stop", "start", "deploy", "rollback", "roll",
     "delete", "remove", "drop", "shutdown", "shut", "terminate", "execute", "run", "fix",
     "patch", "upgrade", "install", "clear", "purge", "wipe", "flush", "reset", "disable",
     "enable", "modify", "update", "set", "change", "create", "destroy", "trigger"}
)
POLITE_PREFIX = frozenset(
    {"please", "pls", "plz", "kindly", "ok", "okay", "yes", "yeah", "yep", "sure", "alright",
     "so", "then", "now", "hey", "go", "ahead", "and", "i", "we", "id", "ill", "like", "want",
     "would", "to", "you", "can", "could", "will", "lets", "let", "us", "just", "bot",
     "assistant", "chatops", "need", "d"}
)
POLITE_SUFFIX = frozenset(
    {"please", "pls", "plz", "now", "thanks", "thank", "you", "thx", "ty", "asap",
     "immediately", "right", "away", "ok", "okay", "cheers"}
)
ACTION_OBJECT_WORDS = frozenset(
    {"the", "action", "remediation", "request", "pending", "id", "number", "no", "fix", "for",
     "this", "that"}
)
REASON_STARTERS = frozenset({"because", "since", "as", "reason", "due", "cause", "cuz", "bc"})
QUESTION_STARTERS = frozenset(
    {"was", "were", "did", "does", "do", "has", "have", "had", "is", "are", "who", "whom",
     "when", "why", "what", "whats", "which", "how", "where", "show", "list", "tell", "give",
     "get", "display", "status", "any", "find", "check"}
)
NEGATIONS = frozenset({"dont", "don't", "not", "never", "no", "without", "nor", "shouldnt",
                       "wont", "cannot", "cant"})

_INJECTION_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(ignore|disregard|forget|override|bypass|skip)\b.{0,40}\b(instructions?|prompts?|"
        r"rules?|directions?|guidelines?|polic(y|ies)|context|previous|above|prior|safety|"
        r"everything|restrictions?)\b",
        r"\byou\s*(are|'re|re)\s+(now|no longer|actually)\b",
        r"\bfrom now on\b",
        r"\b(act|behave)\s+as\b",
        r"\bpretend\b",
        r"\brole-?\s?play\b",
        r"\bjail\s?break\b",
        r"\b(developer|admin|god|dan)\s+mode\b",
        r"\bsystem\s+prompt\b",
        r"\bnew\s+instructions?\b",
        r"^\s*(system|assistant|developer|user)\s*:",
        r"<\|?\s*(im_start|im_end|system|endoftext)",
        r"\[/?(inst|sys)\]",
        r"\bas\s+(the|an|your)\s+(admin|administrator|root|owner|operator)\b",
        r"\bi\s+(order|command|instruct)\s+you\b",
        r"\bwithout\s+(asking|approval|confirmation|checking)\b",
    )
]

_STOP_AFTER_CONTAINS = frozenset(
    {"from", "in", "on", "since", "during", "for", "at", "over", "last", "past", "within",
     "and", "or", "with", "between", "before", "after", "today", "yesterday", "please",
     "logs", "log", "lines", "entries", "messages"}
)

#: List nouns: "last 3 <noun>" is a list size, "last 3 hours" is a time.
LIST_NOUNS_PLURAL = frozenset(
    {"anomalies", "alerts", "alarms", "incidents", "outliers", "events", "spikes", "actions",
     "remediations", "fixes", "restarts", "logs", "lines", "entries", "messages", "errors",
     "warnings", "exceptions", "records", "items", "results", "approvals", "ones", "log"}
)
LIST_NOUNS_SINGULAR = frozenset(
    {"anomaly", "alert", "alarm", "incident", "outlier", "event", "spike", "action",
     "remediation", "fix", "restart", "line", "entry", "message", "error", "warning",
     "exception", "record", "item", "result", "approval", "one"}
)

_NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALE_WORDS = {"hundred": 100, "thousand": 1000}

#: Common English words that are never "corrected" into a keyword they happen to resemble
#: ("loss" is not a typo of "logs", "most" not of "host").
_KNOWN_WORDS = frozenset(
    [
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
        "anything", "are", "around", "as", "at", "back", "be", "been", "before", "being", "below",
        "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "done", "down",
        "during", "each", "few", "for", "from", "further", "get", "gets", "got", "had", "has", "have",
        "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it",
        "its", "itself", "just", "know", "last", "let", "like", "look", "looks", "lot", "made", "make",
        "many", "may", "me", "more", "most", "much", "must", "my", "near", "need", "new", "next", "no",
        "nor", "not", "now", "of", "off", "often", "on", "once", "one", "only", "or", "other", "our",
        "out", "over", "own", "past", "per", "please", "put", "quite", "rather", "really", "right",
        "said", "same", "say", "says", "see", "seen", "seem", "should", "show", "shown", "since", "so",
        "some", "such", "take", "than", "that", "the", "their", "them", "then", "there", "these",
        "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "us", "use",
        "used", "using", "very", "was", "way", "we", "well", "were", "what", "whats", "when", "where",
        "which", "while", "who", "whom", "whose", "why", "will", "with", "within", "without", "would",
        "yes", "yet", "you", "your", "loss", "lost", "most", "cost", "post", "host", "hosts", "fast",
        "list", "least", "best", "test", "rest", "west", "less", "mess", "note", "node", "mode", "code",
        "rate", "late", "date", "data", "time", "times", "type", "some", "come", "home", "hour",
        "hours", "minute", "minutes", "day", "days", "week", "weeks", "month", "months", "second",
        "seconds", "ago", "today", "yesterday", "now", "soon", "recent", "recently", "latest", "first",
        "everything", "anything", "nothing", "something", "ok", "okay", "fine", "good", "bad", "high",
        "low", "full", "free", "used", "level", "levels", "value", "values", "number", "numbers",
        "kind", "sort", "word", "words", "text", "line", "lines", "since", "server", "servers",
        "service", "services", "machine", "machines", "box", "boxes", "instance", "instances", "node",
        "nodes", "cluster", "clusters", "team", "user", "users", "page", "pages", "go", "going", "gone",
        "went", "doing", "does", "done", "open", "close", "closed", "ready", "run", "runs", "running",
        "ran", "start", "started", "stop", "stopped", "keep", "kept", "also", "around", "currently",
        "current", "share", "shared", "send", "sent", "read", "reads", "write", "writes", "wrote",
        "there", "their", "those", "these", "look", "looking", "looked", "tell", "told", "give", "gave",
        "given", "find", "found", "ask", "asked", "check", "checked", "read"
    ]
)


#: Ordinary words one edit away from a keyword, found by auditing the vocabulary: without
#: them "token" would read as "taken", "stale" as "scale", "drained" as "trained",
#: "warming" as "warning" and "except" as "accept".
_NEAR_KEYWORD_WORDS = frozenset(
    {
        "case", "cases", "cased", "continuing", "receives", "healthz", "stats", "states", "lasts",
        "triggerer",
        "token", "tokens", "secret", "secrets", "password", "passwords", "chat", "chats", "stale",
        "sale", "drained", "drain", "draining", "warm", "warming", "warmed", "flat", "hiring",
        "chance", "charge", "charged", "driver", "drivers", "except", "conform", "meant",
        "spending", "lead", "loan", "loud", "desk", "dish", "tall", "toil", "fires", "tired",
        "hired", "legs", "lags", "ward", "wars", "worn", "thinks", "command", "happen", "headed",
        "wealth", "sleet", "dying", "clause", "auction", "black", "dent", "defy", "spine", "spice",
        "heal", "hear", "heat"
    }
)
_KNOWN_WORDS = _KNOWN_WORDS | _NEAR_KEYWORD_WORDS


def _build_vocab() -> frozenset[str]:
    words: set[str] = set()
    for phrase in METRIC_SYNONYMS:
        words.update(phrase.split())
    for phrases in CUES.values():
        for phrase in phrases:
            words.update(phrase.split())
    words |= GENERIC_METRIC_WORDS | APPROVE_VERBS | REJECT_VERBS | COMMAND_VERBS
    words |= LIST_NOUNS_PLURAL | LIST_NOUNS_SINGULAR | set(_NUMBER_WORDS) | set(_SCALE_WORDS)
    words |= {
        "summarize", "summarise", "summary", "recap", "list", "show", "latest", "recent",
        "current", "currently", "minutes", "minute", "hours", "hour", "days", "day", "weeks",
        "week", "seconds", "second", "months", "month", "since", "past", "last", "previous",
        "info", "critical", "fatal", "debug", "containing", "mentioning", "matching",
        "search", "anomaly", "utilization", "utilisation", "approve", "reject", "pending",
        "instructions", "ignore", "overview", "everything", "infrastructure",
    }
    return frozenset(w for w in words if w.isalpha() and len(w) >= 4)


VOCAB = _build_vocab()


# ---------------------------------------------------------------------------------------
# Typo correction
# ---------------------------------------------------------------------------------------

#: The words worth correcting *towards*: the domain keywords the rules above depend on.
#: Generic English, number words and command verbs are deliberately absent -- "none" must
#: not become "nine", nor "path" become "patch".
TYPO_TARGETS = frozenset(
    {
        "processor", "memory", "storage", "network", "inbound", "outbound", "ingress", "egress",
        "traffic", "bandwidth", "utilization", "utilisation", "filesystem", "average",
        "anomaly", "anomalies", "anomalous", "alert", "alerts", "incident", "incidents",
        "outlier", "outliers", "spike", "spikes", "unusual", "abnormal", "logs", "errors",
        "error", "warning", "warnings", "exception", "exceptions", "traceback", "remediation",
        "remediations", "remediated", "actions", "action", "approval", "approvals", "pending",
        "restarts", "restarted", "champion", "model", "detector", "status", "overview",
        "health", "healthy", "summarize", "summarise", "summary", "explain", "history",
        "trend", "minutes", "hours", "seconds", "weeks", "approve", "reject", "decline",
        "cancel", "help", "mlflow", "registry", "trained", "training", "accuracy",
        "yesterday", "containing", "mentioning", "matching", "search", "dashboard", "fleet",
        "audit", "latest", "recent", "current", "currently", "metrics", "usage", "disk",
        "cpu", "load", "incoming", "outgoing", "download", "upload", "transmitted", "received",
        "previous", "since", "last", "past", "show", "list", "explanation", "cause", "caused",
        "triggered", "infrastructure", "capabilities", "commands",
    }
)

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEY_POS = {ch: (r, c) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}


_VOWELS = frozenset("aeiouy")


def _slip(a: str, b: str) -> bool:
    """Neighbouring keys, or one vowel for another (the usual spelling slip)."""
    if a in _VOWELS and b in _VOWELS:
        return True
    pa, pb = _KEY_POS.get(a), _KEY_POS.get(b)
    if pa is None or pb is None:
        return False
    return abs(pa[0] - pb[0]) <= 1 and abs(pa[1] - pb[1]) <= 1


def _typo_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance where a substitution only costs 1 for a slip (keys
    that touch on a QWERTY keyboard, or vowel for vowel) and 2 otherwise (another word)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        row_min = cur[0]
        for j in range(1, len(b) + 1):
            sub = 0 if a[i - 1] == b[j - 1] else 1 if _slip(a[i - 1], b[j - 1]) else 2
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + sub)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
            row_min = min(row_min, cur[j])
        if row_min > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[len(b)]


_CORRECTION_CACHE: dict[str, str | None] = {}
_NO_INFLECTION_TARGETS = APPROVE_VERBS | REJECT_VERBS
_INFLECTIONS = ("s", "es", "ed", "d", "r", "rs", "ing", "er", "ers", "ion", "ions", "ly")


def correct_word(word: str) -> str | None:
    """Return the domain keyword ``word`` is a typo of, or None.

    One slip is allowed (two for words of ten letters or more): a dropped, doubled or
    swapped letter, or a neighbouring key. Words that are vocabulary or common English are
    left alone, as are inflections of a keyword ("loads" is not a typo of "load"), and a
    tie between two keywords means "not sure".
    """
    if word in VOCAB or word in _KNOWN_WORDS or len(word) < 4 or not word.isalpha():
        return None
    if word in _CORRECTION_CACHE:
        return _CORRECTION_CACHE[word]
    limit = 2 if len(word) >= 10 else 1
    best: list[str] = []
    best_d = limit + 1
    for cand in TYPO_TARGETS:
        if abs(len(cand) - len(word)) > limit or cand[0] != word[0]:
            # Typos keep the first letter almost always; requiring it keeps "bogs" and
            # "cogs" from becoming "logs".
            continue
        d = _typo_distance(word, cand, limit)
        if d < best_d:
            best_d, best = d, [cand]
        elif d == best_d and cand not in best:
            best.append(cand)
    result = best[0] if best_d <= limit and len(best) == 1 else None
    if result in _NO_INFLECTION_TARGETS and any(
        word == result + suffix or result == word + suffix for suffix in _INFLECTIONS
    ):
        result = None  # "approver", "rejects": a different word, never read as the command
    if result in APPROVE_VERBS and word[:2] != result[:2]:
        result = None  # an approval is never inferred from a word that merely resembles one
    if len(_CORRECTION_CACHE) < 10_000:
        _CORRECTION_CACHE[word] = result
    return result


# ---------------------------------------------------------------------------------------
# Number words
# ---------------------------------------------------------------------------------------

def numbers_to_digits(tokens: Sequence[str]) -> list[str]:
    """Fold number words into digit tokens: "twenty five" -> "25", "a dozen" -> "12"."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("couple", "pair") or (tok == "dozen"):
            value = 2 if tok in ("couple", "pair") else 12
            if out and out[-1] in ("a", "an"):
                out.pop()
            out.append(str(value))
            i += 1
            if i < len(tokens) and tokens[i] == "of":
                i += 1
            continue
        if tok in ("few", "several") and i + 1 < len(tokens):
            if out and out[-1] == "a":
                out.pop()
            out.append("3")
            i += 1
            continue
        if tok in _NUMBER_WORDS or (tok in _SCALE_WORDS and out and out[-1] in ("a", "an")):
            total = 0
            current = 0
            consumed = 0
            if tok in _SCALE_WORDS:
                out.pop()  # "a hundred"
                current = 1
            while i < len(tokens):
                t = tokens[i]
                if t in _NUMBER_WORDS:
                    v = _NUMBER_WORDS[t]
                    # "twenty five" adds; "five twenty" is two numbers -> stop.
                    if current and (current % 10 != 0 or v >= 10 or current < 20):
                        break
                    current += v
                elif t in _SCALE_WORDS:
                    current = max(current, 1) * _SCALE_WORDS[t]
                    total += current
                    current = 0
                elif t == "and" and consumed and i + 1 < len(tokens) and tokens[i + 1] in _NUMBER_WORDS \
                        and total:
                    pass
                else:
                    break
                consumed += 1
                i += 1
            out.append(str(total + current))
            continue
        out.append(tok)
        i += 1
    return out


# ---------------------------------------------------------------------------------------
# Time phrases -> since_minutes
# ---------------------------------------------------------------------------------------

_UNIT_MINUTES: dict[str, float] = {}
for _names, _minutes in (
    (("s", "sec", "secs", "second", "seconds"), 1 / 60),
    (("m", "min", "mins", "minute", "minutes", "mn"), 1.0),
    (("h", "hr", "hrs", "hour", "hours"), 60.0),
    (("d", "day", "days"), 1440.0),
    (("w", "wk", "wks", "week", "weeks"), 10080.0),
    (("mo", "month", "months"), 43200.0),
):
    for _n in _names:
        _UNIT_MINUTES[_n] = _minutes

_FULL_UNIT = r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|hr|days?|weeks?|wks?|months?)"
_SHORT_UNIT = r"(?:s|m|h|d|w|mn|mo)"
_QTY = r"(?:\d+(?:\.\d+)?)"
# "2 hours", "2h", "2 h", "1h30m", "1 hour 30 minutes", "2 hours and 15 minutes"
_AMOUNT_PART = rf"{_QTY}\s*(?:{_FULL_UNIT}|{_SHORT_UNIT})\b"
_AMOUNT = rf"{_AMOUNT_PART}(?:\s*(?:and\s+|,\s*)?{_AMOUNT_PART})*"
_CONTEXT = r"(?:last|past|previous|prior|recent|trailing|since|ago|within|over|for|from|in|during)"
_LEAD = (
    r"(?:(?:in|over|for|during|within|from|of|since|after)\s+)?(?:the\s+)?"
    r"(?:(?:last|past|previous|prior|recent|trailing|most\s+recent)\s+)?"
)

_TIME_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # "an hour and a half", "2 hours and a half", "the last hour and a half"
    (re.compile(rf"{_LEAD}(?P<n>{_QTY}|an?|1)?\s*hours?\s+and\s+a\s+half(?:\s+(?:ago|back))?"),
     "hour_half"),
    (re.compile(rf"{_LEAD}(?:an?\s+|1\s+)?(?P<n>{_QTY})?\s*(?:1/2|half)\s*(?:an?\s+)?-?\s*"
                r"(?P<u>hour|day|minute)(?:\s+(?:ago|back))?"), "half"),
    (re.compile(rf"{_LEAD}(?:an?\s+|1\s+)?quarter\s+(?:of\s+)?(?:an?\s+)?hour(?:\s+(?:ago|back))?"),
     "quarter"),
    (re.compile(rf"{_LEAD}(?P<amount>{_AMOUNT})(?:\s+(?:ago|back|window))?"), "amount"),
    (re.compile(rf"{_LEAD}(?:an?|1)\s+(?P<u>{_FULL_UNIT})(?:\s+(?:ago|back))?"), "one"),
    (re.compile(r"(?:(?:in|over|for|during|within|from|of|since)\s+)?(?:the\s+)?"
                r"(?:last|past|previous|prior|trailing)\s+(?P<u>second|minute|hour|day|week|month|"
                r"24h|24 hours)\b"), "bare"),
    (re.compile(r"(?:(?:since|from|for|during)\s+)?(?P<w>today|yesterday|this morning|overnight)\b"),
     "word"),
    (re.compile(r"(?:since|after|from)?\s*__clock(?P<c>\d+)__"), "clock"),
]


@dataclass(frozen=True)
class TimeMatch:
    minutes: int
    start: int
    end: int


def _amount_minutes(text: str) -> float:
    total = 0.0
    for qty, unit in re.findall(rf"({_QTY})\s*({_FULL_UNIT}|{_SHORT_UNIT})\b", text):
        total += float(qty) * _UNIT_MINUTES[unit]
    return total


def find_time(text: str, now: datetime | None = None) -> TimeMatch | None:
    """Find the first time phrase in normalised lower-case ``text``.

    Bare single-letter units ("5 m") only count with a time context word before them or
    glued to the number ("5m"), so "top 5 m..." stays a list size.
    """
    best: TimeMatch | None = None
    for pattern, kind in _TIME_PATTERNS:
        for m in pattern.finditer(text):
            if m.start() and text[m.start() - 1].isalnum():
                continue  # must start on a word boundary
            minutes: float
            if kind == "hour_half":
                n = m.group("n")
                base = 1.0 if n in (None, "a", "an", "1") else float(n)
                minutes = base * 60 + 30
            elif kind == "half":
                n = m.group("n")
                unit_minutes = _UNIT_MINUTES[m.group("u")]
                minutes = (float(n) if n else 0.0) * unit_minutes + unit_minutes / 2
            elif kind == "quarter":
                minutes = 15
            elif kind == "amount":
                amount = m.group("amount")
                glued = re.fullmatch(rf"{_QTY}(?:{_FULL_UNIT}|{_SHORT_UNIT})(?:{_AMOUNT_PART})*",
                                     amount.replace(" ", ""))
                has_full_unit = re.search(rf"\d\s*{_FULL_UNIT}\b", amount) is not None
                before = text[: m.start("amount")].split()
                after = text[m.end():].split()
                context = bool(before and re.fullmatch(_CONTEXT, before[-1])) or bool(
                    re.search(r"\b(ago|back)\s*$", m.group(0))
                ) or (after[:1] == ["ago"])
                if not (has_full_unit or context or (glued and " " not in amount.strip())):
                    continue
                minutes = _amount_minutes(amount)
            elif kind == "one":
                minutes = _UNIT_MINUTES[m.group("u")]
            elif kind == "bare":
                u = m.group("u")
                minutes = 1440.0 if u in ("24h", "24 hours") else _UNIT_MINUTES[u]
            elif kind == "word":
                ref = now or datetime.now(UTC)
                midnight = ref.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                w = m.group("w")
                if w == "today":
                    minutes = (ref - midnight).total_seconds() / 60
                elif w == "yesterday":
                    minutes = (ref - (midnight - timedelta(days=1))).total_seconds() / 60
                elif w == "this morning":
                    minutes = (ref - midnight).total_seconds() / 60
                else:  # overnight: since 18:00 the previous day
                    minutes = (ref - (midnight - timedelta(hours=6))).total_seconds() / 60
            else:  # clock
                minutes = float(m.group("c"))
            if minutes <= 0:
                continue
            match = TimeMatch(min(MAX_SINCE_MINUTES, max(1, math.ceil(minutes - 1e-9))),
                              m.start(), m.end())
            if best is None or match.start < best.start or (
                match.start == best.start and match.end > best.end
            ):
                best = match
    return best


def parse_since_minutes(text: str, now: datetime | None = None) -> int | None:
    """Public helper: the ``since_minutes`` a free-text time phrase means, or None."""
    now = now or datetime.now(UTC)
    tokens = numbers_to_digits(_tokenize(_replace_clock_times(clean_text(text), now).lower()))
    found = find_time(" ".join(tokens), now)
    return found.minutes if found else None


# ---------------------------------------------------------------------------------------
# Extraction of verbatim pieces (placeholders keep them out of typo correction)
# ---------------------------------------------------------------------------------------

_ACTION_ID_RE = re.compile(r"(?<![\w-])act-[a-z0-9_]+(?:-[a-z0-9]+)*(?![\w-])", re.IGNORECASE)
_ANOMALY_ID_RE = re.compile(r"(?<![\w-])anom-[a-z0-9_]+(?![\w-])", re.IGNORECASE)
_QUOTED_RE = re.compile(r"\"([^\"]{1,200})\"|(?<![a-z0-9])'([^']{1,200})'(?![a-z0-9])|`([^`]{1,200})`",
                        re.IGNORECASE)
_HOST_RE = re.compile(
    r"(?<![\w.-])([a-z][a-z0-9]*(?:-[a-z0-9]+)*-\d+(?:\.[a-z0-9-]+)*|i-[0-9a-f]{8,17})(?![\w-])",
    re.IGNORECASE,
)
_CLOCK_RE = re.compile(r"\b(since|after|from)\s+(\d{1,2}):(\d{2})\s*(am|pm)?\s*(utc|z|gmt)?\b",
                       re.IGNORECASE)
_CONTAINS_RE = re.compile(
    r"\b(?:containing|contains|contain|mentioning|mentions|mention|matching|matches|match|"
    r"grep(?:\s+(?:the\s+)?logs?)?(?:\s+for)?|with\s+the\s+(?:word|text|string|phrase|message)|"
    r"that\s+says?|which\s+says?|saying|including\s+the\s+(?:word|text)|"
    r"(?:search|look|looking|find)(?:\s+(?:the|in|through))?(?:\s+logs?)?\s*(?:for\b|:)|"
    r"logs?\s*:)\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_NOT_HOST_PREFIXES = frozenset(
    {"last", "past", "top", "since", "next", "first", "p", "utf", "iso", "sha", "f", "act",
     "anom", "sess", "covid", "ipv", "python", "py", "x", "e", "t"}
)


def _tokenize(text: str) -> list[str]:
    text = text.replace("'s ", " ").replace("'", "")
    return re.findall(r"__[a-z]+\d*__|\d+(?:\.\d+)?[a-z]*|[a-z_][a-z0-9_]*|\?", text)


@dataclass
class _Extracted:
    text: str
    hosts: list[str] = field(default_factory=list)
    action_ids: list[str] = field(default_factory=list)
    anomaly_ids: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)
    contains: str | None = None


def _extract(text: str, known_hosts: Iterable[str], now: datetime) -> _Extracted:
    ex = _Extracted(text)

    def quoted(m: re.Match[str]) -> str:
        value = next(g for g in m.groups() if g is not None).strip()
        ex.quoted.append(value)
        return f" __quote{len(ex.quoted) - 1}__ "

    work = _QUOTED_RE.sub(quoted, text)

    def action(m: re.Match[str]) -> str:
        ex.action_ids.append(m.group(0).lower())
        return " __act__ "

    work = _ACTION_ID_RE.sub(action, work)

    def anomaly(m: re.Match[str]) -> str:
        ex.anomaly_ids.append(m.group(0).lower())
        return " __anom__ "

    work = _ANOMALY_ID_RE.sub(anomaly, work)

    work = _replace_clock_times(work, now)

    # "containing X": X is kept verbatim (case and spelling) as the log search term.
    cm = _CONTAINS_RE.search(work)
    if cm:
        words = cm.group("rest").split()
        taken: list[str] = []
        for w in words:
            bare = w.strip(".,;:!?")
            if bare.lower() in _STOP_AFTER_CONTAINS or re.fullmatch(r"__act__|__anom__", bare):
                break
            qm = re.fullmatch(r"__quote(\d+)__", bare)
            if qm:
                if not taken:
                    taken.append(ex.quoted[int(qm.group(1))])
                break
            taken.append(bare)
            if len(taken) == 3 or w != bare:  # punctuation ends the term
                break
        if taken:
            ex.contains = " ".join(taken)
            work = (work[: cm.start("rest")] + " __contains__ "
                    + _drop_words(cm.group("rest"), len(taken)))

    known = {h.lower() for h in known_hosts}
    compact = {h.replace("-", ""): h for h in known if "-" in h}

    def host(m: re.Match[str]) -> str:
        cand = m.group(1).lower()
        prefix = cand.split("-", 1)[0]
        if cand not in known and prefix in _NOT_HOST_PREFIXES:
            return m.group(0)
        ex.hosts.append(cand)
        return " __host__ "

    work = _HOST_RE.sub(host, work)
    if known:
        names = sorted(known | set(compact), key=len, reverse=True)
        alt = "|".join(re.escape(n) for n in names if not _HOST_RE.fullmatch(n) or n in compact)
        if alt:
            def known_host(m: re.Match[str]) -> str:
                name = m.group(1).lower()
                ex.hosts.append(compact.get(name, name))
                return " __host__ "

            work = re.sub(rf"(?<![\w-])({alt})(?![\w-])", known_host, work, flags=re.IGNORECASE)
    ex.text = work
    return ex


def _replace_clock_times(text: str, now: datetime) -> str:
    """"since 10:30" -> a placeholder carrying the minutes since then (UTC, last occurrence)."""

    def clock(m: re.Match[str]) -> str:
        hour, minute = int(m.group(2)), int(m.group(3))
        if m.group(4):
            hour = hour % 12 + (12 if m.group(4).lower() == "pm" else 0)
        if hour > 23 or minute > 59:
            return m.group(0)
        at = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        if at > now:
            at -= timedelta(days=1)
        return f" since __clock{max(1, math.ceil((now - at).total_seconds() / 60))}__ "

    return _CLOCK_RE.sub(clock, text)


def _drop_words(text: str, n: int) -> str:
    parts = text.split(maxsplit=n)
    return parts[n] if len(parts) > n else ""


# ---------------------------------------------------------------------------------------
# Cue detection helpers
# ---------------------------------------------------------------------------------------

def _phrase_re(phrases: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted(set(phrases), key=lambda p: (-len(p.split()), -len(p)))
    return re.compile(r"(?<![\w])(" + "|".join(re.escape(p) for p in ordered) + r")(?![\w])")


_METRIC_RE = _phrase_re(METRIC_SYNONYMS)
_CUE_RES = {name: _phrase_re(phrases) for name, phrases in CUES.items()}


def _has(name: str, text: str) -> bool:
    return _CUE_RES[name].search(text) is not None


def _find_metrics(text: str) -> tuple[list[str], str]:
    found: list[str] = []

    def repl(m: re.Match[str]) -> str:
        found.append(METRIC_SYNONYMS[m.group(1)])
        return " __metric__ "

    rest = _METRIC_RE.sub(repl, text)
    return found, rest


def _find_limit(tokens: Sequence[str]) -> int | None:
    lead = {"last", "latest", "top", "first", "recent", "newest", "previous", "past", "next",
            "limit", "max", "most"}
    for i, tok in enumerate(tokens):
        if not tok.isdigit():
            continue
        n = int(tok)
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1:i + 4]
        if prev in lead or (i >= 2 and tokens[i - 2:i] in (["up", "to"], ["at", "most"])):
            return max(1, min(MAX_LIMIT, n))
        rest = [t for t in nxt if t not in ("most", "recent", "latest", "last", "newest", "new",
                                            "log", "error", "warning", "cpu", "memory", "disk")]
        if nxt and (nxt[0] in LIST_NOUNS_PLURAL or (nxt[0] in LIST_NOUNS_SINGULAR and n == 1)
                    or (rest and rest[0] in LIST_NOUNS_PLURAL and nxt[0] in (
                        "most", "recent", "latest", "last", "newest", "new", "log", "error",
                        "warning"))):
            return max(1, min(MAX_LIMIT, n))
    for i, tok in enumerate(tokens[:-1]):
        if tok in ("last", "latest", "newest", "previous") or tokens[i:i + 2] == ["most", "recent"]:
            j = i + (2 if tok == "most" else 1)
            while j < len(tokens) and tokens[j] in ("__metric__", "log", "remediation", "cpu",
                                                   "memory", "disk"):
                j += 1
            if j < len(tokens) and tokens[j] in LIST_NOUNS_SINGULAR and tokens[j] != "one":
                return 1
            if j < len(tokens) and tokens[j] == "one":
                return 1
    return None


def _find_level(text: str) -> str | None:
    levels: list[str] = []
    if re.search(r"\b(errors?|err|fatal|critical|crit|exceptions?|tracebacks?|stack trace|"
                 r"failures?|panic)\b", text):
        levels.append("error")
    if re.search(r"\b(warnings?|warn|warns)\b", text):
        levels.append("warning")
    if re.search(r"\b(info|informational|notice)\b", text):
        levels.append("info")
    if not levels:
        return None
    # read_logs filters "that level and above": "warnings and errors" is warning.
    return min(levels, key=LEVELS.index)


def _is_injection(text: str) -> bool:
    return any(p.search(text) for p in _INJECTION_PATTERNS)


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------

_CONNECTORS = (
    ("and", "what", "about"), ("what", "about"), ("how", "about"), ("and", "for"),
    ("and", "on"), ("and", "in"), ("same", "for"), ("same", "on"), ("same", "but"),
    ("same", "thing"), ("now", "for"), ("now", "on"), ("also", "for"), ("also", "on"),
    ("ok", "and"), ("and",), ("also",), ("then",), ("same",),
)
_MORE_WORDS = frozenset({"more", "next", "continue", "keep", "going", "else", "further",
                         "older", "rest", "remaining", "page"})
_FILLER = frozenset({"show", "me", "please", "pls", "some", "the", "give", "ones", "and", "ok",
                     "okay", "what", "results", "a", "few", "bit", "any", "list", "?",
                     "items", "entries", "lines", "of", "them"})


def parse(text: str, *, hosts: Iterable[str] = (), now: datetime | None = None) -> ParsedQuery:
    """Understand one message. ``hosts`` are known host names (helps with names like
    ``bastion`` that do not look like ``web-1``); ``now`` anchors "today"/"since 10:30"."""
    now = now or datetime.now(UTC)
    cleaned = clean_text(text)
    injection = _is_injection(cleaned)
    label = _parse_label(cleaned, hosts, now, injection)
    if label is not None:
        return label
    ex = _extract(cleaned, hosts, now)

    raw_tokens = _tokenize(ex.text.lower())
    corrections: dict[str, str] = {}
    tokens: list[str] = []
    for tok in raw_tokens:
        fixed = correct_word(tok)
        if fixed:
            corrections[tok] = fixed
            tokens.append(fixed)
        else:
            tokens.append(tok)
    tokens = numbers_to_digits(tokens)
    joined = " ".join(tokens)

    params: dict[str, Any] = {}
    time = find_time(joined, now)
    if time:
        params["since_minutes"] = time.minutes
        joined = (joined[: time.start] + " __time__ " + joined[time.end:]).strip()
        joined = re.sub(r"\s+", " ", joined)
    tokens = joined.split()

    metrics, metric_text = _find_metrics(joined)
    distinct_metrics = list(dict.fromkeys(metrics))
    if len(distinct_metrics) == 1:
        params["metric"] = distinct_metrics[0]
    if ex.hosts:
        params["host"] = ex.hosts[0]
    if len(ex.action_ids) == 1:
        params["action_id"] = ex.action_ids[0]
    limit = _find_limit(metric_text.split())
    if limit is not None:
        params["limit"] = limit

    def done(intent: str, reason: str, *, refusal: str | None = None,
             followup: Followup = None) -> ParsedQuery:
        allowed = INTENT_PARAMS[intent]
        kept = {k: v for k, v in params.items() if k in allowed}
        return ParsedQuery(
            intent=intent, params=kept, followup=followup, refusal=refusal,
            anomaly_id=ex.anomaly_ids[0] if ex.anomaly_ids else None, injection=injection,
            corrections=corrections, reason=reason, mentioned=dict(params),
            decision_note=_decision_note(cleaned) if intent in ACTION_INTENTS else None,
        )

    content = [t for t in tokens if t not in ("?", "!", ".")]
    if not content:
        return done("help", "empty question") if "?" in tokens else done("unknown", "empty")

    # -- actions: only an explicit, well-formed request ------------------------------------
    verb_positions = [
        (i, "approve" if t in APPROVE_VERBS else "reject")
        for i, t in enumerate(tokens)
        if t in APPROVE_VERBS or t in REJECT_VERBS
    ]
    first_word = next((t for t in tokens if t not in POLITE_PREFIX), "")
    is_question = tokens[0] in QUESTION_STARTERS or (first_word in QUESTION_STARTERS and (
        not verb_positions or tokens.index(first_word) < verb_positions[0][0]
    ))
    if verb_positions and (injection or not is_question):
        how = ("To act on a pending remediation, send only the request, e.g. "
               "'approve act-1a2b3c' or 'reject act-1a2b3c'.")
        if injection:
            return done("unknown", "action with injection", refusal=(
                "I did not act on this message: it also tries to change my instructions. "
                + how))
        action = _match_action_request(tokens)
        if action is None:
            if not ex.action_ids:
                reason = "Which action? I need its explicit id. " + how
            elif len(ex.action_ids) > 1:
                reason = "I act on exactly one action per message. " + how
            elif any(t in NEGATIONS for t in tokens):
                reason = "That reads as a negated request, so I did nothing. " + how
            else:
                reason = "I only act on a message that is just the request. " + how
            return done("unknown", "malformed action request", refusal=reason)
        return done(f"remediation.{action}", "explicit action request")

    # -- other imperatives that would change the fleet --------------------------------------
    if first_word in COMMAND_VERBS and first_word != "trigger":
        return done("unknown", "command", refusal=(
            f"I can't run '{first_word}' from chat: remediation runs through the rule engine, "
            "and pending actions are approved with 'approve act-…'. "
            "Ask me about metrics, anomalies, logs, actions or the model."))

    # -- follow-ups -------------------------------------------------------------------------
    followup: Followup = None
    if any(t in _MORE_WORDS for t in content) and all(
        t in _MORE_WORDS or t in _FILLER or t.isdigit() for t in content
    ):
        return done("unknown", "more", followup="more")
    for conn in _CONNECTORS:
        if tuple(content[: len(conn)]) == conn:
            followup = "refine"
            break

    cue_text = metric_text  # metric phrases removed: "load" is not a remediation word etc.
    has = {name: _has(name, cue_text) for name in CUES}
    has_metric = bool(metrics) or any(t in GENERIC_METRIC_WORDS for t in tokens)
    has_id = bool(ex.action_ids)
    level = _find_level(cue_text)

    def finish(intent: str, reason: str) -> ParsedQuery:
        return done(intent, reason, followup=followup)

    if has["help_strong"]:
        return finish("help", "help cue")
    if has_id:
        return finish("remediation.history", "action id")
    explain_context = has["anomaly"] or bool(ex.hosts) or bool(metrics) or bool(ex.anomaly_ids)
    if has["explain"] and explain_context:
        return finish("anomaly.explain", "explain cue")
    if ex.anomaly_ids:
        return finish("anomaly.explain", "anomaly id")
    if has["remediation"]:
        return finish("remediation.history", "remediation cue")
    if has["logs"] or ex.contains is not None or (ex.quoted and has["logs"]):
        return _logs(done, params, ex, cue_text, level, followup)
    if has["model_strong"]:
        return finish("model.status", "model cue")
    if has["anomaly"]:
        return finish("anomaly.summary", "anomaly cue")
    if has["model_weak"]:
        return finish("model.status", "model cue")
    if metrics:
        return _metric(finish, has, joined, params)
    if has["status"]:
        return finish("status.overview", "status cue")
    if has_metric:
        return _metric(finish, has, joined, params)
    if has["help"]:
        return finish("help", "help cue")
    if followup is None and (ex.hosts or time) and len(
        [t for t in content if t not in _FILLER and not t.startswith("__")]
    ) <= 2:
        followup = "refine"  # a bare fragment ("db-1?", "last 2 hours") continues a turn
    if ex.hosts:
        return finish("metric.current", "host only")
    return finish("unknown", "no cue")


def _metric(finish: Any, has: dict[str, bool], joined: str, params: dict[str, Any]) -> ParsedQuery:
    history = has["history"] or "since_minutes" in params
    current = re.search(r"\b(now|current|currently|right now|at the moment|live)\b", joined)
    if history and not (current and "since_minutes" not in params and not has["history"]):
        return finish("metric.history", "metric + time")  # type: ignore[no-any-return]
    return finish("metric.current", "metric")  # type: ignore[no-any-return]


def _logs(done: Any, params: dict[str, Any], ex: _Extracted, cue_text: str, level: str | None,
          followup: Followup) -> ParsedQuery:
    if level:
        params["level"] = level
    contains = ex.contains
    if contains is None and ex.quoted:
        contains = ex.quoted[0]
    if contains is None:
        # "search logs for timeout", "logs about OOM": a free word after for/about/with.
        m = re.search(r"\b(?:for|about|regarding|with|related to)\s+([a-z0-9_.:/-]+)", cue_text)
        if m and m.group(1) not in _STOP_AFTER_CONTAINS and not m.group(1).startswith("__") \
                and m.group(1) not in ("the", "a", "an", "any", "all", "me", "us") \
                and not m.group(1).isdigit() and m.group(1) not in CUES["logs"]:
            contains = _original_word(ex.text, m.group(1))
    if contains:
        params["contains"] = contains
    return done("logs.search", "logs cue", followup=followup)  # type: ignore[no-any-return]


def _original_word(text: str, lowered: str) -> str:
    m = re.search(rf"(?<![\w]){re.escape(lowered)}(?![\w])", text, re.IGNORECASE)
    return m.group(0) if m else lowered


_NOTE_RE = re.compile(r"\bact-[\w-]+\W*\s+(?:because|since|as|reason:?|due to|cause|cuz|bc)\b\s*(.+)$",
                      re.IGNORECASE)


def _decision_note(text: str) -> str | None:
    m = _NOTE_RE.search(text)
    if m is None:
        return None
    return m.group(1).strip(" .!:;,")[:200] or None


def _match_action_request(tokens: Sequence[str]) -> str | None:
    """Match ``[polite] VERB [the action] <id> [please|reason...]``; return the verb kind.

    The message must be *only* that request: a second id, a second verb, a negation or any
    other clause makes it not a request (the caller explains why).
    """
    toks = [t for t in tokens if t not in ("?", "!", ".")]
    i = 0
    while i < len(toks) and toks[i] in POLITE_PREFIX:
        i += 1
    if i >= len(toks):
        return None
    verb = toks[i]
    if verb in APPROVE_VERBS:
        kind = "approve"
    elif verb in REJECT_VERBS:
        kind = "reject"
    else:
        return None
    if any(t in NEGATIONS for t in toks[:i]):
        return None
    i += 1
    while i < len(toks) and toks[i] in ACTION_OBJECT_WORDS:
        i += 1
    if i >= len(toks) or toks[i] != "__act__":
        return None
    i += 1
    rest = toks[i:]
    if not rest or all(t in POLITE_SUFFIX for t in rest):
        return kind
    if rest[0] in REASON_STARTERS or (rest[0] in ("it", "its", "this", "that", "too")):
        reason = rest[1:]
        if any(t in APPROVE_VERBS or t in REJECT_VERBS or t == "__act__" for t in reason):
            return None
        return kind
    return None


# ---------------------------------------------------------------------------------------
# Operator feedback: labels ("mark the last anomaly on web-1 as a false alarm")
# ---------------------------------------------------------------------------------------
#
# A label is a write that feeds the training gate, so, as with approvals, the rules are
# strict rather than clever: the kind must be said in words this table knows (no typo
# correction), a negation is only understood in the two fixed forms "not a false alarm" and
# "not a real incident", a question is never a label, and anything else near the line
# (another negation, two hosts, an injection, a window without a host) is refused with a
# reply saying how to ask.

LABEL_HOW = (
    "To label, send e.g. 'mark the last anomaly on web-1 as a false alarm', 'label web-1 from "
    "10:00 to 10:30 as an incident' (times are UTC), 'mark anom-… as a real incident', or "
    "'that was a false alarm' right after I showed you one anomaly."
)

_THING = r"(?:incident|anomaly|anomalie|alert|alarm|problem|issue|outage|event|detection|positive)s?"
#: Negated kinds first: "not a real incident" must not also read as "real incident".
_NOT_INCIDENT_RE = re.compile(
    rf"\bnot\s+(?:really\s+|actually\s+)?(?:an?\s+)?(?:real|true|genuine|actual|confirmed)?\s*{_THING}\b")
_NOT_FALSE_RE = re.compile(
    r"\bnot\s+(?:really\s+|actually\s+)?(?:an?\s+)?false\s+(?:alarm|alert|positive|detection|flag)s?\b")
_FALSE_RE = re.compile(
    r"\bfalse\s+(?:alarm|alert|positive|detection|flag|trigger)s?\b|\bnoise\b|\bbenign\b|"
    r"\bnothing\s+wrong\b|\bfalse_alarm\b")
_INCIDENT_RE = re.compile(
    rf"\b(?:real|true|genuine|actual|confirmed|legit(?:imate)?)\s+{_THING}\b|"
    r"\b(?:as|was|is|were)\s+(?:an?\s+)?incidents?\b")
_KIND_HINT_RE = re.compile(r"false|real|true|genuine|actual|confirmed|legit|incident|noise|benign|wrong",
                           re.IGNORECASE)
_LABEL_VERB_RE = re.compile(
    r"\b(?:mark|marked|label|labelled|labeled|tag|tagged|flag|classify|record|count|treat|file|"
    r"register)\b")
_COPULA_RE = re.compile(r"\b(?:was|is|were|looks like|looked like|seems|seemed|turned out)\b")
_NEGATION_RE = re.compile(r"\b(?:not|no|never|don't|dont|do not|shouldn't|shouldnt|won't|wont|"
                          r"cannot|can't|cant|nor|without)\b")
_CONTRACTIONS_RE = re.compile(r"\b(was|is|were|do|does|did|are|should|would|could)n'?t\b")
_LATEST_RE = re.compile(r"\b(?:last|latest|most recent|newest|previous|recent)\b")
_LABEL_FILLER = frozenset(
    {"that", "it", "this", "one", "that's", "thats", "it's", "its", "just", "a", "an", "the", "ok",
     "okay", "yes", "yeah", "yep", "so", "please", "pls", "thanks", "fyi", "btw", "actually",
     "really", "was", "is", "all"})
_LABEL_NOTE_RE = re.compile(
    r"\s*[,;:.-]?\s*\b(?:because|reason:|note:|cause:|due to|cuz|bc)\s*(?P<note>.*)$", re.IGNORECASE)


def _clock_pattern(p: str) -> str:
    return (rf"(?:(?P<{p}d>\d{{4}}-\d{{2}}-\d{{2}})[ t])?(?P<{p}h>\d{{1,2}}):(?P<{p}m>\d{{2}})"
            rf"(?::(?P<{p}s>\d{{2}}))?(?:\s*(?P<{p}ap>am|pm))?"
            rf"(?:\s*(?P<{p}tz>utc|gmt|z|[+-]\d{{2}}:?\d{{2}})(?![\w]))?")


_LABEL_RANGE_RE = re.compile(
    rf"(?<![\w:])(?:(?:from|between)\s+)?{_clock_pattern('a')}\s*(?:to|until|till|through|and|-)\s*"
    rf"{_clock_pattern('b')}(?![\w:])", re.IGNORECASE)
_LABEL_AT_RE = re.compile(rf"(?<![\w:])(?:(?:at|around|about|near|@)\s+)?{_clock_pattern('a')}(?![\w:])",
                          re.IGNORECASE)


def _label_kind(text: str) -> tuple[set[str], str]:
    """The kinds ``text`` states, and the text with those phrases taken out."""
    kinds: set[str] = set()
    for pattern, kind in ((_NOT_INCIDENT_RE, "false_alarm"), (_NOT_FALSE_RE, "incident"),
                          (_FALSE_RE, "false_alarm"), (_INCIDENT_RE, "incident")):
        if pattern.search(text):
            kinds.add(kind)
            text = pattern.sub(" __kind__ ", text)
    return kinds, text


def _clock_time(m: re.Match[str], p: str) -> tuple[datetime, bool] | None:
    """One matched clock time as UTC; the bool says whether it carried a date."""
    hour, minute, second = int(m.group(p + "h")), int(m.group(p + "m")), int(m.group(p + "s") or 0)
    ampm = (m.group(p + "ap") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    tz = (m.group(p + "tz") or "").lower()
    offset = timedelta(0)
    if tz and tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        offset = -offset if tz[0] == "-" else offset
    day = m.group(p + "d")
    try:
        base = datetime.fromisoformat(day).date() if day else None
    except ValueError:
        return None
    if base is None:  # a placeholder day; the caller moves it to the right one
        return datetime(2000, 1, 1, hour, minute, second, tzinfo=UTC) - offset, False
    return datetime(base.year, base.month, base.day, hour, minute, second, tzinfo=UTC) - offset, True


def _on_day(value: datetime, day: datetime) -> datetime:
    return value.replace(year=day.year, month=day.month, day=day.day)


def _label_times(text: str, now: datetime) -> tuple[str, dict[str, str], str | None]:
    """Lift a window ("from 10:00 to 10:30") or a point ("at 14:05") out of ``text``.

    Clock times without a date are UTC today, or yesterday when that would be in the future
    (an operator labels what already happened). Returns the text with a placeholder, the
    params, and a refusal when a time is not a time.
    """
    now = now.astimezone(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    m = _LABEL_RANGE_RE.search(text)
    if m:
        first, second = _clock_time(m, "a"), _clock_time(m, "b")
        if first is None or second is None:
            return text, {}, "That is not a valid time of day."
        (start, start_dated), (end, end_dated) = first, second
        if not start_dated and not end_dated:
            start, end = _on_day(start, today), _on_day(end, today)
            if end <= start:
                end += timedelta(days=1)  # "from 23:30 to 00:15" crosses midnight
            if end > now + timedelta(minutes=5):
                start, end = start - timedelta(days=1), end - timedelta(days=1)
        elif not start_dated:
            start = _on_day(start, end)
            start -= timedelta(days=1) if start >= end else timedelta(0)
        elif not end_dated:
            end = _on_day(end, start)
            end += timedelta(days=1) if end <= start else timedelta(0)
        rest = text[: m.start()] + " __window__ " + text[m.end():]
        return rest, {"start": iso_z(start), "end": iso_z(end)}, None
    m = _LABEL_AT_RE.search(text)
    if m:
        point = _clock_time(m, "a")
        if point is None:
            return text, {}, "That is not a valid time of day."
        at, dated = point
        if not dated:
            at = _on_day(at, today)
            if at > now + timedelta(minutes=5):
                at -= timedelta(days=1)
        return text[: m.start()] + " __at__ " + text[m.end():], {"at": iso_z(at)}, None
    return text, {}, None


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_label(cleaned: str, hosts: Iterable[str], now: datetime, injection: bool) -> ParsedQuery | None:
    """``label.add`` (or a refusal) when ``cleaned`` is label feedback; None when it is not."""
    if not _KIND_HINT_RE.search(cleaned):
        return None  # every kind phrase holds one of these words: most questions stop here
    if _ACTION_ID_RE.search(cleaned):
        return None  # "reject act-1 because it was a false alarm" is a decision, not a label
    note_match = _LABEL_NOTE_RE.search(cleaned)
    body = cleaned[: note_match.start()] if note_match else cleaned
    note = note_match.group("note").strip(" .!:;,")[:200] or None if note_match else None
    lowered = _CONTRACTIONS_RE.sub(r"\1 not", body.lower()).replace("’", "'")
    kinds, rest = _label_kind(lowered)
    if not kinds:
        return None
    words = re.findall(r"[a-z0-9_'-]+|\?", rest)
    if not words:
        return None
    asks = words[0] in QUESTION_STARTERS and words[1:2] != ["not"]  # "do not mark ..." is no question
    if asks or body.rstrip().endswith("?"):
        return None  # "was that a false alarm?" asks; it does not label
    bare = all(w in _LABEL_FILLER or w == "__kind__" for w in words)
    if not (bare or _LABEL_VERB_RE.search(rest) or _COPULA_RE.search(rest)):
        return None  # "too many false alarms on web-2": a remark, not feedback on one event

    def refuse(why: str, reason: str) -> ParsedQuery:
        return ParsedQuery(intent="unknown", params={}, refusal=f"{why} {LABEL_HOW}", injection=injection,
                           reason=reason)

    if injection:
        return refuse("I did not store a label: the message also tries to change my instructions.",
                      "label with injection")
    if len(kinds) > 1:
        return refuse("That says both 'incident' and 'false alarm', so I stored nothing.", "label: two kinds")
    if _NEGATION_RE.search(rest):
        return refuse("That reads as a negated request, so I stored nothing.", "label: negation")
    rest, times, bad_time = _label_times(rest, now)
    if bad_time:
        return refuse(bad_time, "label: bad time")
    ex = _extract(rest, hosts, now)
    found_hosts = list(dict.fromkeys(ex.hosts))
    if len(found_hosts) > 1:
        return refuse("A label is for one host; send one message per host.", "label: two hosts")
    if len(ex.anomaly_ids) > 1:
        return refuse("A label is for one anomaly; send one message per anomaly.", "label: two ids")
    params: dict[str, Any] = {"kind": kinds.pop()}
    if found_hosts:
        params["host"] = found_hosts[0]
    params.update(times)
    target: str | None = None
    if ex.anomaly_ids:
        params["anomaly_id"] = ex.anomaly_ids[0]
    elif "start" in times:
        if not found_hosts:
            return refuse("Which host? A window needs one.", "label: window without host")
    elif "at" not in times:
        target = "latest" if (found_hosts or _LATEST_RE.search(rest)) else "previous"
    return ParsedQuery(
        intent="label.add", params=params, anomaly_id=ex.anomaly_ids[0] if ex.anomaly_ids else None,
        injection=injection, reason="label feedback", mentioned=dict(params), decision_note=note,
        label_target=target,
    )
