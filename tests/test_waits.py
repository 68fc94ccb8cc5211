"""No tenant can hold every server thread with waits or streams (issue 10, item 1).

Waiting POSTs, ``GET /zapier/v1/compositions/{uid}?wait=N`` and SSE streams each hold a
gthread thread; ``metering.concurrency.WaitSlots`` caps them per credential, in all
(shared by every process through Redis) and per process. Through a real gunicorn (two
processes, real threads): one tenant's many waits and streams on a composition that never
finishes (no worker runs here, so it stays queued) leave threads for everyone else; the
waits over the cap are answered at once with the current state, the streams over it are
429. In-process (a ``ManualClock``): a dead process's leases lapse, a closed stream gives
its slot back, and the per-process cap holds on its own.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from falcon.testing import TestClient, create_environ

from conftest import ADMIN, bearer, make_app, start_gunicorn
from core.clock import ManualClock
from metering.concurrency import LEASE_SECONDS

ME = "/zapier/v1/me"
CLIENT_TIMEOUT = 90  # generous: these tests never bound wall time from above


@pytest.fixture(scope="module")
def gunicorn_default(config, schema):
    """The shipped defaults: 2 processes x 8 threads; 2 slots per credential, 8 in all,
    4 per process."""
    proc, url = start_gunicorn(config, workers=2, threads=8)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gunicorn_total3(config, schema):
    """Three slots in all, across both processes (fewer than one process may hold)."""
    proc, url = start_gunicorn(config, workers=2, threads=8,
                               extra_env={"WAIT_SLOTS_TOTAL": "3"})
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _queued(url, key) -> str:
    """A new echo-async composition; with no worker running it stays queued."""
    resp = requests.post(url + "/zapier/v1/echo-async?wait=0", headers=bearer(key),
                         json={"message": "slow", "delay_ms": 30000}, timeout=CLIENT_TIMEOUT)
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]["composition"]["uid"]


def _extra_key(client, account_id) -> str:
    resp = client.simulate_post(f"/admin/accounts/{account_id}/keys", headers=ADMIN,
                                json={"description": "another"})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["apiKey"]


def _wait_get(url, key, uid, seconds=60):
    resp = requests.get(f"{url}/zapier/v1/compositions/{uid}?wait={seconds}",
                        headers=bearer(key), timeout=CLIENT_TIMEOUT)
    return resp.status_code, resp.headers, resp.json()


def _until_done(futures, count, timeout=45):
    """Block until at least ``count`` of ``futures`` are done (or the deadline passes)."""
    deadline = time.monotonic() + timeout
    while sum(f.done() for f in futures) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [f for f in futures if f.done()], [f for f in futures if not f.done()]


def _assert_current_state(result, url, uid):
    """An over-cap wait: answered at once, the documented 202 with the queued composition."""
    status, headers, body = result
    assert status == 202, body
    assert body["data"]["composition"]["uid"] == uid
    assert body["data"]["composition"]["status"] == "queued"
    assert headers["Retry-After"] == "2"
    assert headers["Location"].endswith(f"/zapier/v1/compositions/{uid}")


def _others_are_served(url, key):
    """Another tenant's auth test and the liveness probe, while the waits hold threads."""
    me = requests.get(url + ME, headers=bearer(key), timeout=CLIENT_TIMEOUT)
    assert me.status_code == 200, me.text
    assert me.json()["success"] is True
    health = requests.get(url + "/health", timeout=CLIENT_TIMEOUT)
    assert health.status_code == 200 and health.text == "OK"


def _cancel(url, key, uid):
    resp = requests.post(f"{url}/zapier/v1/compositions/{uid}/cancel", headers=bearer(key),
                         timeout=CLIENT_TIMEOUT)
    assert resp.status_code == 200, resp.text


def _refused_stream(url, key, uid):
    """Open a stream and assert it was refused over the cap (closing it either way, so a
    stream that was wrongly let in fails here instead of hanging the test)."""
    with requests.get(f"{url}/zapier/v1/compositions/{uid}/events", headers=bearer(key),
                      stream=True, timeout=CLIENT_TIMEOUT) as resp:
        assert resp.status_code == 429, "a stream over the cap was let in"
        _assert_rate_limited(resp)


def _assert_rate_limited(resp):
    assert resp.status_code == 429, resp.text
    body = resp.json()
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["statusCode"] == 429
    assert int(resp.headers["Retry-After"]) >= 1


def _events(stream):
    """``(event, data)`` pairs of an SSE response, read through one line iterator (a second
    ``iter_lines`` on the same response would start after what the first one buffered)."""
    event = None
    for line in stream.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def _first_event(stream) -> tuple[str, dict]:
    return next(_events(stream))


def test_sixteen_free_waits_by_one_tenant_leave_threads_for_everyone(
        gunicorn_default, make_account):
    """The reported attack: one account on the default plan sends 16 ``?wait=60`` polls
    (free, 2 x 8 threads in all) on one composition that does not finish."""
    url = gunicorn_default
    _, attacker = make_account(credits=5)
    _, other = make_account(credits=5)
    uid = _queued(url, attacker)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(_wait_get, url, attacker, uid) for _ in range(16)]
        # 2 waits (the per-credential cap) hold a thread each; the other 14 are answered
        # at once with the current state instead of holding the other 14 threads
        done, held = _until_done(futures, 14)
        assert len(done) == 14, f"only {len(done)} of 16 waits were answered at once"
        for future in done:
            _assert_current_state(future.result(), url, uid)
        _others_are_served(url, other)
        assert not any(f.done() for f in held), "the held waits ended before the others ran"
        assert len(held) == 2
        # the held waits are real waits: they end with the composition
        _cancel(url, attacker, uid)
        for future in held:
            status, _, body = future.result(timeout=CLIENT_TIMEOUT)
            assert status == 200, body
            assert body["data"]["composition"]["status"] == "cancelled"


def test_many_credentials_share_one_global_cap_across_processes(
        gunicorn_total3, client, make_account):
    """One account with five keys (10 slots by the per-credential cap) still holds no more
    than ``WAIT_SLOTS_TOTAL`` (3) across both processes; a full server refuses new streams
    even to other tenants, but answers their ordinary requests and their waits at once."""
    url = gunicorn_total3
    account_id, first = make_account(credits=5)
    keys = [first] + [_extra_key(client, account_id) for _ in range(4)]
    _, other = make_account(credits=5)
    uid = _queued(url, first)
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(_wait_get, url, key, uid) for key in keys for _ in range(2)]
        done, held = _until_done(futures, 7)
        assert len(done) == 7, f"{len(done)} of 10 waits were answered at once"
        for future in done:
            _assert_current_state(future.result(), url, uid)
        _others_are_served(url, other)
        other_uid = _queued(url, other)
        _refused_stream(url, other, other_uid)
        _assert_current_state(_wait_get(url, other, other_uid, 30), url, other_uid)
        assert not any(f.done() for f in held)
        assert len(held) == 3
        _cancel(url, first, uid)
        for future in held:
            assert future.result(timeout=CLIENT_TIMEOUT)[0] == 200
    # the slots came back: the other tenant's stream is served now
    deadline = time.monotonic() + 30
    while True:
        with requests.get(f"{url}/zapier/v1/compositions/{other_uid}/events",
                          headers=bearer(other), stream=True, timeout=CLIENT_TIMEOUT) as stream:
            if stream.status_code == 200:
                assert _first_event(stream)[1]["status"] == "queued"
                break
            _assert_rate_limited(stream)  # a released slot may lag the answer a moment
        assert time.monotonic() < deadline, "the slots never came back"
        time.sleep(0.2)


def test_streams_over_the_cap_are_429_and_other_tenants_stream_on(gunicorn_default,
                                                                  make_account):
    url = gunicorn_default
    _, attacker = make_account(credits=5)
    _, other = make_account(credits=5)
    uid = _queued(url, attacker)
    events_url = f"{url}/zapier/v1/compositions/{uid}/events"
    streams = []
    try:
        for _ in range(2):  # the per-credential cap
            stream = requests.get(events_url, headers=bearer(attacker), stream=True,
                                  timeout=CLIENT_TIMEOUT)
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            streams.append((stream, _events(stream)))
            event, data = next(streams[-1][1])
            assert (event, data["uid"], data["status"]) == ("progress", uid, "queued")
        for _ in range(3):
            _refused_stream(url, attacker, uid)
        # waits share the streams' slots: answered at once with the current state
        _assert_current_state(_wait_get(url, attacker, uid), url, uid)
        _others_are_served(url, other)
        other_uid = _queued(url, other)
        with requests.get(f"{url}/zapier/v1/compositions/{other_uid}/events",
                          headers=bearer(other), stream=True, timeout=CLIENT_TIMEOUT) as own:
            assert own.status_code == 200
            assert _first_event(own)[1]["uid"] == other_uid
        _cancel(url, attacker, uid)
        for _, events in streams:  # the open streams end with the composition
            event, data = next(events)
            assert (event, data["status"]) == ("end", "cancelled")
    finally:
        for stream, _ in streams:
            stream.close()


# --- in-process: lapse, close, per-process cap -----------------------------------------


def _open_raw(app, path, key):
    """Call the WSGI app directly: the stream's body is returned un-iterated, as a server
    that died right after the headers would leave it."""
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"] = int(status[:3])
        started["headers"] = {k.lower(): v for k, v in headers}

    body = app(create_environ(path=path, headers=bearer(key)), start_response)
    return started["status"], started["headers"], body


def test_a_dead_process_leases_lapse_and_a_closed_stream_gives_its_slot_back(
        config, schema, make_account, client):
    clock = ManualClock()
    dying, alive = make_app(config, clock=clock), make_app(config, clock=clock)
    _, key = make_account(credits=5)
    uid = client.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                               json={"message": "m"}, headers=bearer(key)
                               ).json["data"]["composition"]["uid"]
    path = f"/zapier/v1/compositions/{uid}/events"
    # a process takes both of the credential's slots and dies: never iterated, never closed
    for _ in range(2):
        status, _, _ = _open_raw(dying, path, key)
        assert status == 200
    status, headers, body = _open_raw(alive, path, key)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(b"".join(body))["error"]["code"] == "RATE_LIMITED"
    waited = TestClient(alive).simulate_get(f"/zapier/v1/compositions/{uid}",
                                            params={"wait": "30"}, headers=bearer(key))
    assert waited.status_code == 202 and waited.json["data"]["composition"]["status"] == "queued"
    # the dead process renews nothing: its leases lapse
    clock.advance(LEASE_SECONDS + 1)
    status, _, body = _open_raw(alive, path, key)
    assert status == 200
    status, _, second = _open_raw(alive, path, key)
    assert status == 200
    assert _open_raw(alive, path, key)[0] == 429
    # a stream the client closed (even before reading it) gives its slot back
    body.close()
    status, _, third = _open_raw(alive, path, key)
    assert status == 200
    second.close()
    third.close()


def test_the_per_process_cap_holds_without_the_shared_ones(config, schema, make_account,
                                                          client):
    app = make_app(config.replace(wait_slots_per_process=1, wait_slots_per_credential=5))
    _, one = make_account(credits=5)
    _, two = make_account(credits=5)
    uids = [client.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                 json={"message": "m"}, headers=bearer(key)
                                 ).json["data"]["composition"]["uid"] for key in (one, two)]
    status, _, held = _open_raw(app, f"/zapier/v1/compositions/{uids[0]}/events", one)
    assert status == 200
    status, headers, _ = _open_raw(app, f"/zapier/v1/compositions/{uids[1]}/events", two)
    assert status == 429 and int(headers["retry-after"]) >= 1
    held.close()
    status, _, again = _open_raw(app, f"/zapier/v1/compositions/{uids[1]}/events", two)
    assert status == 200
    again.close()


def test_an_ended_composition_streams_and_answers_without_a_slot(config, schema,
                                                                 make_account, client):
    """Nothing to wait for takes no slot: with every slot of the credential taken, an
    ended composition still streams its ``end`` event and answers its waits."""
    app = make_app(config.replace(wait_slots_per_credential=0))
    _, key = make_account(credits=5)
    uid = client.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                               json={"message": "m"}, headers=bearer(key)
                               ).json["data"]["composition"]["uid"]
    local = TestClient(app)
    assert local.simulate_get(f"/zapier/v1/compositions/{uid}/events",
                              headers=bearer(key)).status_code == 429
    assert local.simulate_post(f"/zapier/v1/compositions/{uid}/cancel",
                               headers=bearer(key)).status_code == 200
    resp = local.simulate_get(f"/zapier/v1/compositions/{uid}/events", headers=bearer(key))
    assert resp.status_code == 200
    assert "event: end" in resp.text and '"status": "cancelled"' in resp.text
    waited = local.simulate_get(f"/zapier/v1/compositions/{uid}", params={"wait": "30"},
                                headers=bearer(key))
    assert waited.status_code == 200
