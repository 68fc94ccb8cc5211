"""Redis faults never become 500s (issue 10, items 4 and 12).

PostgreSQL holds the truth of a composition, so reading one needs no Redis: with Redis
stopped or hanging, ``GET /zapier/v1/compositions/{uid}`` answers from the database
(``queuePosition`` null), a wait answers the current state at once, and an SSE stream is
refused with a 503 envelope before it starts. Any Redis connection or timeout error that
reaches the error mapping is a 503 ``SERVICE_UNAVAILABLE``, and every 503 (database down,
queue down, Redis down, readiness) carries ``Retry-After``.
"""

from __future__ import annotations

import json

import pytest
from falcon.testing import TestClient

from conftest import bearer, free_port, make_app
from metering import db as dbmod


@pytest.fixture
def models_file(tmp_path):
    """One catalogue model, so /getQueuesLength has a queue to ask Redis about."""
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"id": "m1", "path": str(tmp_path / "m1")}]}))
    return str(path)


def _queued(client, key) -> str:
    resp = client.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                json={"message": "m"}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    return resp.json["data"]["composition"]["uid"]


def _assert_unavailable(resp):
    assert resp.status_code == 503, resp.text
    body = resp.json
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["error"]["statusCode"] == 503
    assert body["meta"]["requestId"]
    assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
    assert "Traceback" not in resp.text


def _polling_answers_from_the_database(broken, key, uid):
    """What a caller polling ``uid`` sees while the app's Redis does not answer."""
    path = f"/zapier/v1/compositions/{uid}"
    for params in ({}, {"wait": "5"}):  # no wait, and a wait that cannot be served
        resp = broken.simulate_get(path, params=params, headers=bearer(key))
        assert resp.status_code == 202, resp.text
        comp = resp.json["data"]["composition"]
        assert comp["uid"] == uid and comp["status"] == "queued"
        assert comp["queuePosition"] is None  # Redis cannot say; the row still answers
        assert resp.headers["Retry-After"] == "2" and resp.headers["Location"].endswith(path)
    listed = broken.simulate_get("/zapier/v1/compositions", headers=bearer(key))
    assert listed.status_code == 200, listed.text
    assert [c["uid"] for c in listed.json["data"]["items"]] == [uid]
    # a stream needs Redis: refused before it starts, as an envelope
    stream = broken.simulate_get(f"{path}/events", headers=bearer(key))
    _assert_unavailable(stream)
    assert stream.headers["Content-Type"].startswith("application/json")
    # another route that needs Redis: the queue lengths
    _assert_unavailable(broken.simulate_get("/getQueuesLength", headers=bearer(key)))
    # cancelling needs only the database; the ended composition then streams its end
    cancel = broken.simulate_post(f"{path}/cancel", headers=bearer(key))
    assert cancel.status_code == 200, cancel.text
    ended = broken.simulate_get(f"{path}/events", headers=bearer(key))
    assert ended.status_code == 200 and "event: end" in ended.text
    waited = broken.simulate_get(path, params={"wait": "5"}, headers=bearer(key))
    assert waited.status_code == 200
    assert waited.json["data"]["composition"]["status"] == "cancelled"


def test_polling_sse_and_redis_routes_with_redis_stopped(config, schema, make_account,
                                                         own_redis, models_file):
    broken = TestClient(make_app(config.replace(redis_url=own_redis.url,
                                                models_file=models_file)))
    _, key = make_account(credits=5)
    uid = _queued(broken, key)  # queued on this app's own Redis while it runs
    own_redis.kill()
    _polling_answers_from_the_database(broken, key, uid)
    # the queue is down: the async POST is a 503 too (nothing is charged, see runner)
    _assert_unavailable(broken.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                             json={"message": "m"}, headers=bearer(key)))


def test_polling_sse_and_redis_routes_with_redis_hanging(config, schema, make_account,
                                                         client, hanging_redis, models_file):
    url, held = hanging_redis
    _, key = make_account(credits=5)
    uid = _queued(client, key)  # on the real Redis; the row is what counts
    broken = TestClient(make_app(config.replace(redis_url=url, models_file=models_file)))
    _polling_answers_from_the_database(broken, key, uid)
    assert held, "the gateway never reached the hanging listener"


def test_every_503_carries_retry_after(config, schema, make_account, client):
    _, key = make_account(credits=5)
    # Redis down: readiness, which a resource answers itself
    no_redis = config.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    dead_redis = TestClient(make_app(no_redis))
    ready = dead_redis.simulate_get("/health/ready")
    _assert_unavailable(ready)
    # the queue down: the async POST
    _assert_unavailable(dead_redis.simulate_post("/zapier/v1/echo-async",
                                                 params={"wait": "0"}, json={"message": "m"},
                                                 headers=bearer(key)))
    # the database down (this binds the process's models to it: bound back below)
    dead_db = config.replace(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
    try:
        down = TestClient(make_app(dead_db))
        _assert_unavailable(down.simulate_get("/zapier/v1/me", headers=bearer(key)))
        assert down.simulate_get("/health").status_code == 200
    finally:
        dbmod.bind(config.database_url, config.db_pool_size)
    assert client.simulate_get("/zapier/v1/me", headers=bearer(key)).status_code == 200
