"""Prometheus metrics for ChatOps (``GET /metrics``; ``deploy/prometheus`` scrapes it).

One registry per app (tests build many apps in one process). Each gunicorn worker keeps
its own figures, as the scoring service does; Prometheus sums counters over scrapes of the
same port only approximately -- prometheus_client's multiprocess mode would merge them.
No labels carry user text: intents, sources and error codes are closed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "smartcloudops_chatops"
#: Seconds; dense below 50 ms, issue 6's p95 target.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class ChatOpsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.questions = Counter(f"{PREFIX}_questions", "Questions answered, by intent and channel.",
                                 ("intent", "channel"), registry=self.registry)
        self.latency = Histogram(f"{PREFIX}_answer_seconds", "Time to answer one question (parse, "
                                 "evidence, compose, LLM).", ("channel",), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.llm = Counter(f"{PREFIX}_llm_answers", "Answers where an LLM was configured, by "
                           "whether its text was used.", ("used",), registry=self.registry)
        self.evidence_errors = Counter(f"{PREFIX}_evidence_unavailable", "Evidence items whose "
                                       "source could not be read.", ("source",), registry=self.registry)
        self.refused = Counter(f"{PREFIX}_refused", "Requests refused (auth, rate limit, Slack "
                               "signature), by HTTP status and error code.", ("status", "code"),
                               registry=self.registry)

    def observe(self, channel: str, intent: str, seconds: float, llm_used: bool | None,
                evidence_sources_failed: list[str]) -> None:
        self.questions.labels(intent, channel).inc()
        self.latency.labels(channel).observe(seconds)
        if llm_used is not None:
            self.llm.labels("true" if llm_used else "false").inc()
        for source in evidence_sources_failed:
            self.evidence_errors.labels(source).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
