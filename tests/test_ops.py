"""Operations routes (CONTRACT 8): liveness, readiness, the OpenAPI document and metrics,
through the real app on PostgreSQL and Redis, and metrics aggregated across gunicorn
worker processes."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from falcon.testing import TestClient

from conftest import bearer, free_port, make_app, start_gunicorn
from gateway.openapi import METHODS, documented
from gateway.routes import route_table


def _sample(text: str, name: str, **labels) -> float:
    """Sum of the Prometheus text samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def test_health_is_plain_ok_without_auth(client):
    resp = client.simulate_get("/health")
    assert resp.status_code == 200
    assert resp.text == "OK"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["X-Request-ID"]
    assert "X-RateLimit-Limit" not in resp.headers


def _ready_when(client, status, timeout=30):
    """GET /health/ready until it answers ``status`` (a worker takes a moment to register)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.simulate_get("/health/ready")
        if resp.status_code == status or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def test_ready_reports_database_redis_and_workers(client, worker):
    resp = _ready_when(client, 200)
    assert resp.status_code == 200, resp.text
    body = resp.json
    assert body["success"] is True
    checks = body["data"]["checks"]
    assert checks["database"]["ok"] is True
    assert checks["redis"]["ok"] is True
    workers = checks["workers"]
    assert workers["ok"] is True and workers["missing"] == []
    assert workers["count"] == 1  # one `gateway worker` on cpu and webhooks
    assert workers["queues"] == {"cpu": 1, "webhooks": 1}  # no models configured
    assert "Retry-After" not in resp.headers
    assert body["meta"]["requestId"] == resp.headers["X-Request-ID"]
    assert body["meta"]["timestamp"].endswith("Z")


def _unserved(config, **changes):
    """The same stores under a Redis prefix of its own, whose queues no worker serves."""
    return config.replace(redis_prefix=f"{config.redis_prefix}:ready{uuid.uuid4().hex[:6]}",
                          **changes)


def test_ready_is_503_when_no_worker_serves_a_needed_queue(config, schema, worker):
    client = TestClient(make_app(_unserved(config)))
    resp = client.simulate_get("/health/ready")
    assert resp.status_code == 503, resp.text
    body = resp.json
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["error"]["statusCode"] == 503
    assert body["error"]["message"] == "No live worker serves: cpu, webhooks"
    assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
    assert body["meta"]["requestId"] == resp.headers["X-Request-ID"]
    checks = body["data"]["checks"]
    assert checks["database"]["ok"] is True and checks["redis"]["ok"] is True
    assert checks["workers"] == {"ok": False, "count": 0, "queues": {"cpu": 0, "webhooks": 0},
                                 "missing": ["cpu", "webhooks"]}
    assert client.simulate_get("/health").status_code == 200  # liveness is not readiness


def test_ready_needs_a_worker_on_each_models_queue(lconfig, schema, tmp_path):
    import json

    from async_support import start_worker, stop_worker
    from jobs.gpu.tiny import catalogue_entry

    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": [catalogue_entry("m1", tmp_path / "m1")]}))
    config = _unserved(lconfig, models_file=str(models))
    client = TestClient(make_app(config))
    cpu = start_worker(config, queues="cpu,webhooks", MODELS_FILE=str(models))
    try:
        resp = _ready_when(client, 200, timeout=5)  # stays 503: nothing serves gpu.m1
        assert resp.status_code == 503, resp.text
        workers = resp.json["data"]["checks"]["workers"]
        assert workers["missing"] == ["gpu.m1"]
        assert workers["queues"] == {"cpu": 1, "webhooks": 1, "gpu.m1": 0}
        assert resp.json["error"]["message"] == "No live worker serves: gpu.m1"
        gpu = start_worker(config, queues="gpu", MODELS_FILE=str(models))
        try:
            resp = _ready_when(client, 200)
            assert resp.status_code == 200, resp.text
            workers = resp.json["data"]["checks"]["workers"]
            assert workers["queues"] == {"cpu": 1, "webhooks": 1, "gpu.m1": 1}
            assert workers["count"] == 2
        finally:
            stop_worker(gpu)
        assert _ready_when(client, 503).status_code == 503  # a stopped worker leaves
    finally:
        stop_worker(cpu)


def test_ready_is_503_envelope_when_redis_is_down(config, schema):
    dead = config.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = TestClient(make_app(dead))
    resp = client.simulate_get("/health/ready")
    assert resp.status_code == 503
    body = resp.json
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["error"]["statusCode"] == 503
    assert resp.headers["Retry-After"].isdigit()
    checks = body["data"]["checks"]
    assert checks["redis"]["ok"] is False
    assert checks["database"]["ok"] is True
    assert checks["workers"]["ok"] is False
    # nothing internal leaks: only the exception's class name
    assert "127.0.0.1" not in resp.text and "Traceback" not in resp.text
    # liveness does not depend on Redis
    assert client.simulate_get("/health").status_code == 200


def test_openapi_document_covers_every_route_and_action(client, app):
    resp = client.simulate_get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]

    expected = {
        path for path, resource in route_table(app.deps)
        if documented(path, resource)
        and any(hasattr(resource, f"on_{m}") for m in METHODS)
    }
    assert expected, "the route table is empty"
    assert expected <= set(paths), sorted(expected - set(paths))
    for path, resource in route_table(app.deps):
        if path in expected:
            for m in METHODS:
                assert (m in paths[path]) == hasattr(resource, f"on_{m}"), (path, m)
    assert "/zapier/v1/{action}" not in paths

    names = [action.name for action in app.deps.registry]
    assert "echo" in names
    for action in app.deps.registry:
        op = paths[f"/zapier/v1/{action.name}"]["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema == action.json_schema()
        assert op["x-credits"] == app.deps.actions.price_of(action.name)
    echo = paths["/zapier/v1/echo"]["post"]["requestBody"]["content"]["application/json"]
    assert "message" in echo["schema"]["properties"]
    assert "message" in echo["schema"].get("required", [])

    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {**schemes["bearerKey"], "type": "http", "scheme": "bearer"}
    assert schemes["adminKey"]["in"] == "header"
    assert schemes["adminKey"]["name"] == "X-Administration-Key"
    assert doc["security"]
    assert paths["/health"]["get"]["security"] == []
    assert paths["/admin/plans/{name}"]["put"]["security"] == [{"adminKey": []}]
    # every operation id is unique (Make and n8n importers key on them)
    op_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids))


def test_openapi_document_is_valid_openapi_3_1(client):
    validator = pytest.importorskip("openapi_spec_validator")
    doc = client.simulate_get("/openapi.json").json
    validator.validate(doc)  # raises on any violation of the OpenAPI 3.1 schema


def test_metrics_count_requests_and_debits(client, make_account):
    _, key = make_account(credits=5)
    client.simulate_get("/health")
    resp = client.simulate_post("/zapier/v1/echo", json={"message": "m"}, headers=bearer(key))
    assert resp.status_code == 200
    metrics = client.simulate_get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.text
    assert "# TYPE gateway_requests_total counter" in text
    assert _sample(text, "gateway_requests_total", route="/health", method="GET",
                   status="200") >= 1
    assert _sample(text, "gateway_debits_total", action="echo") >= 1
    assert _sample(text, "gateway_request_seconds_count", route="/zapier/v1/{action}",
                   method="POST") >= 1
    before = _sample(text, "gateway_debits_total", action="echo")
    client.simulate_post("/zapier/v1/echo", json={"message": "m"}, headers=bearer(key))
    after = _sample(client.simulate_get("/metrics").text, "gateway_debits_total", action="echo")
    assert after == before + 1


def test_metrics_show_queue_depth_and_compositions(client, make_account):
    """Queue depth comes from Redis and outcomes from the database, at scrape time."""
    _, key = make_account(credits=5)
    for _ in range(2):
        resp = client.simulate_post("/zapier/v1/echo-async", json={"message": "m"},
                                    headers=bearer(key), params={"wait": "0"})
        assert resp.status_code == 202
    text = client.simulate_get("/metrics").text
    assert _sample(text, "gateway_queue_depth", queue="cpu") == 2
    assert _sample(text, "gateway_queue_depth", queue="webhooks") == 0
    assert _sample(text, "gateway_compositions", action="echo-async", status="queued") == 2


@pytest.mark.slow
def test_metrics_aggregate_across_gunicorn_workers(config, schema, tmp_path):
    from prometheus_client.multiprocess import MultiProcessCollector

    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    proc, url = start_gunicorn(config, workers=2, threads=4,
                               extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
    try:
        def hit(_):
            # a fresh connection per request so both worker processes accept some
            r = requests.get(url + "/health", headers={"Connection": "close"}, timeout=10)
            return r.status_code

        def per_process():
            """Each worker's own /health count, from its own multiprocess file."""
            counts = {}
            for f in mp_dir.glob("counter_*.db"):
                for metric in MultiProcessCollector.merge([str(f)], accumulate=True):
                    for s in metric.samples:
                        if s.name == "gateway_requests_total" and \
                                s.labels.get("route") == "/health":
                            counts[f.name] = counts.get(f.name, 0) + s.value
            return {name: v for name, v in counts.items() if v > 0}

        made, deadline = 0, time.monotonic() + 20
        with ThreadPoolExecutor(16) as pool:
            # until both workers have served some (the kernel decides who accepts)
            while made < 120 or (len(per_process()) < 2 and time.monotonic() < deadline):
                codes = list(pool.map(hit, range(60)))
                assert codes == [200] * 60
                made += 60
        served = per_process()
        assert len(served) >= 2, served

        text = requests.get(url + "/metrics", timeout=10).text
        total = _sample(text, "gateway_requests_total", route="/health", method="GET",
                        status="200")
        assert total >= made  # plus start_gunicorn's readiness probe(s)
        # the endpoint reported the sum over the processes, not one worker's own count
        assert total == sum(served.values())
        assert max(served.values()) < total
    finally:
        proc.terminate()
        proc.wait(timeout=20)
