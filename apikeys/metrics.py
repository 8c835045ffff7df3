"""Prometheus metrics at /metrics: every /verify answer by result, and how long verification took.

Under gunicorn the numbers of every worker are added up through
prometheus-client's multiprocess mode: gunicorn_conf's hooks give it a fresh
directory (PROMETHEUS_MULTIPROC_DIR) at start and tell it when a worker exits.
No label carries a tenant or a key: cardinality stays fixed, and nothing private leaves.
"""

from __future__ import annotations

import os

from flask import Response

from apikeys import errors
from apikeys.verification.extension import get_state

# Each result code (VALID, or a refusal's) and the label it is counted under: from the refusal classes themselves,
# so that a new refusal is one class in apikeys.errors.
RESULTS = {"VALID": "valid"} | {refusal.code: refusal.label for refusal in errors.refusals()}
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_process_metrics = None  # prometheus-client's registry is per process, and so are these


class VerificationMetrics:
    """The counter of /verify answers by result and the latency histogram, made once per process."""

    def __init__(self):
        from prometheus_client import Counter
        from prometheus_client import Histogram

        counter = Counter("apikeys_verifications", "/verify answers, by result.", ["result"])
        self.by_label = {label: counter.labels(label) for label in RESULTS.values()}
        self.duration = Histogram(
            "apikeys_verification_duration_seconds", "Time to verify a key at /verify.", buckets=BUCKETS
        )
        # Every verification of a rate-limited key the counter store failed (or was skipped after a failure) for.
        self.rate_limit_errors = Counter("apikeys_rate_limit_errors", "Rate-limit store failures, per verification.")


def count_verification(state, label: str, seconds: float) -> None:
    """Count one /verify answer under its result label ("valid", or a refusal's label), in ``state``'s metrics."""
    # The state is passed in, not looked up: the middleware answers /verify without an app context.
    metrics = state.metrics
    if metrics is not None:
        metrics.by_label[label].inc()
        metrics.duration.observe(seconds)


def metrics_view():
    """Answer the Prometheus text format: this process's metrics, or every gunicorn worker's."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    from prometheus_client import CollectorRegistry
    from prometheus_client import generate_latest
    from prometheus_client import multiprocess

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # content_type, not mimetype: werkzeug would append a second charset, and Prometheus 3 refuses the repeat.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app) -> None:
    """Serve /metrics and count verifications, unless APIKEYS_METRICS is off."""
    global _process_metrics
    if not app.config["APIKEYS_METRICS"]:
        return
    if _process_metrics is None:
        _process_metrics = VerificationMetrics()
    get_state(app).metrics = _process_metrics
    app.add_url_rule("/metrics", "metrics", metrics_view)
