"""The KEDA queries of deploy/k8s name metrics that a real `dalston serve` exports, with the labels
they join on: a renamed gauge would leave every ScaledObject scaling on nothing, silently."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.serving import running_server

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def test_scaled_object_queries_use_exported_metrics(engines_with_test_variants, session_model_root):
    import yaml

    queries = [t["metadata"]["query"] for path in sorted(K8S.rglob("scaledobject.yaml"))
               for t in yaml.safe_load(path.read_text())["spec"]["triggers"] if t["type"] == "prometheus"]
    used = {name for query in queries for name in re.findall(r"\b(dalston_[a-z_]+)", query)}
    assert {"dalston_requests_queued", "dalston_requests_in_flight", "dalston_realtime_sessions_active",
            "dalston_engine_info"} <= used
    with running_server("whisper-tiny-en", engines_root=engines_with_test_variants, model_dir=session_model_root,
                        load=False) as server:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    samples = {s.name: s.labels for family in text_string_to_metric_families(text) for s in family.samples}
    assert used <= set(samples), sorted(used - set(samples))
    assert samples["dalston_engine_info"] == {"engine_id": "whisper-tiny-en"}
