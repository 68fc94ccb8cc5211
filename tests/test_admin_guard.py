"""Guessing the administration key: wrong ``X-Administration-Key`` values are limited per
client address (``ADMIN_FAILURES_PER_WINDOW`` per ``ADMIN_FAILURE_WINDOW_SECONDS``); past
the limit every admin request from that address, the right key included, is
``429 RATE_LIMITED`` with ``Retry-After``. Right keys are never counted."""

from __future__ import annotations

import threading

import pytest
import requests
from falcon.testing import TestClient

from conftest import ADMIN, ADMIN_KEY, make_app, start_gunicorn

LIMIT = 3
WRONG = {"X-Administration-Key": "not-the-key"}


@pytest.fixture(scope="module")
def guarded(config, schema):
    return TestClient(make_app(config.replace(admin_failures_per_window=LIMIT,
                                              admin_failure_window_s=600)))


def _get(client, headers, addr="198.51.100.7"):
    return client.simulate_get("/admin/accounts/acct_nobody", headers=headers, remote_addr=addr)


def _assert_limited(resp):
    assert resp.status_code == 429, resp.text
    assert resp.json["error"]["code"] == "RATE_LIMITED"
    assert resp.json["error"]["statusCode"] == 429
    assert 0 < int(resp.headers["Retry-After"]) <= 600


def test_wrong_keys_beyond_the_limit_are_rate_limited(guarded):
    for _ in range(LIMIT):
        resp = _get(guarded, WRONG)
        assert resp.status_code == 401, resp.text
        assert resp.json["error"]["code"] == "AUTH_FAILED"
    for _ in range(5):
        _assert_limited(_get(guarded, WRONG))


def test_the_right_key_is_refused_while_the_address_is_over_the_limit(guarded):
    for _ in range(LIMIT):
        assert _get(guarded, WRONG).status_code == 401
    # Answering the right key differently would tell a guesser when it found it.
    _assert_limited(_get(guarded, ADMIN))
    # Another address is not affected.
    assert _get(guarded, ADMIN, addr="198.51.100.8").status_code == 404
    assert _get(guarded, WRONG, addr="198.51.100.8").status_code == 401


def test_right_keys_are_not_counted(guarded):
    for _ in range(3 * LIMIT):
        assert _get(guarded, ADMIN).status_code == 404  # authenticated: no such account
    for _ in range(LIMIT):
        assert _get(guarded, WRONG).status_code == 401
    _assert_limited(_get(guarded, WRONG))


def test_a_missing_header_is_not_a_guess(guarded):
    for _ in range(2 * LIMIT):
        resp = _get(guarded, {})
        assert resp.status_code == 401 and resp.json["error"]["code"] == "MISSING_AUTH_HEADER"
    assert _get(guarded, ADMIN).status_code == 404


def test_the_address_comes_from_trusted_proxies(config, schema):
    client = TestClient(make_app(config.replace(admin_failures_per_window=LIMIT,
                                                admin_failure_window_s=600,
                                                trusted_proxies=1)))

    def via(forwarded, headers):
        return client.simulate_get("/admin/accounts/acct_nobody", remote_addr="10.0.0.1",
                                   headers={**headers, "X-Forwarded-For": forwarded})

    for _ in range(LIMIT):
        assert via("203.0.113.5", WRONG).status_code == 401
    _assert_limited(via("203.0.113.5", ADMIN))
    assert via("203.0.113.6", ADMIN).status_code == 404  # same proxy, another client


def test_concurrent_guesses_across_gunicorn_processes_get_exactly_the_limit(config, schema):
    """A burst of wrong keys from many threads against two processes: exactly
    ``ADMIN_FAILURES_PER_WINDOW`` are compared and answered 401, the rest 429."""
    proc, url = start_gunicorn(config, workers=2, threads=8,
                               extra_env={"ADMIN_FAILURES_PER_WINDOW": "5"})
    try:
        statuses, lock = [], threading.Lock()

        def guess(i):
            session = requests.Session()
            for j in range(6):
                resp = session.get(url + "/admin/accounts/acct_nobody", timeout=30,
                                   headers={"X-Administration-Key": f"guess-{i}-{j}"})
                with lock:
                    statuses.append(resp.status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(statuses) == 60
        assert statuses.count(401) == 5, statuses
        assert statuses.count(429) == 55, statuses
        resp = requests.get(url + "/admin/accounts/acct_nobody", timeout=30,
                            headers={"X-Administration-Key": ADMIN_KEY})
        assert resp.status_code == 429
        assert int(resp.headers["Retry-After"]) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
