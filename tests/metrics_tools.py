"""What the tests read of the bridge's metrics: `GET /metrics` parsed as Prometheus parses it."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(base_url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(base_url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
