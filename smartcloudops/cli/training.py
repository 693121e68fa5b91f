"""``smartcloudops train``: the train_validate_deploy pipeline in-process, without Airflow.

The same functions the DAG's tasks call (``ml.pipeline``), run one after another, with
progress on the console. Useful on a laptop and for debugging a failing DAG run.
"""

from __future__ import annotations

from datetime import UTC, datetime

from smartcloudops.settings import Settings


def train_now(settings: Settings, days: float | None = None) -> int:
    from ml import pipeline
    from smartcloudops.logs import configure_logging

    if days is not None:
        settings = settings.model_copy(update={"train_days": days})
    configure_logging("training", settings)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(f"train: gathering {settings.train_days:g} days of metrics up to {end.isoformat()}", flush=True)
    dataset = pipeline.prepare_dataset(end, settings=settings)
    pipeline.write_labels(dataset, settings=settings)
    keys = pipeline.prepare_split(dataset)
    results = []
    names = pipeline.candidate_names()
    for index, name in enumerate(names, start=1):
        print(f"train: [{index}/{len(names)}] {name}:", end="", flush=True)
        parts = []
        for key in keys:  # one detector per host, then the pooled fallback, as the DAG fits them
            parts.append(pipeline.fit_part(name, key, dataset))
            print(f" {key}", end="", flush=True)
        result = pipeline.evaluate_and_log(name, dataset, parts, settings=settings)
        results.append(result)
        gate = "passes" if result["passes_gate"] else "fails"
        print(
            f" → event-F1 {result['event_f1']:.3f} ({gate} the {settings.f1_gate} gate), "
            f"point-F1 {result['point_f1']:.3f}, FP/day {result['fp_per_day']:.2f}, "
            f"{result['train_seconds']:.1f}s → version {result['version']}",
            flush=True,
        )
    decision = pipeline.promote_best(results, settings=settings)
    print(f"train: {decision.get('reason', decision)}")
    return 0
