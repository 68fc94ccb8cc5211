"""CONTRACT 7 on the key list (``GET /api/key/list``) and the hook list
(``GET /zapier/v1/hooks``): newest first, a stable ``id`` per item, ``limit`` (default 50,
1-100) and a cursor, and ``data.next`` as the full URL of the next page (null on the last),
followed here exactly as n8n and Make follow it."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest

from conftest import bearer
from metering import db as dbmod

KEYS, HOOKS = "/api/key/list", "/zapier/v1/hooks"


def _follow(client, path, headers, query):
    """Every page from ``path?query`` on, following ``data.next``; returns the pages."""
    pages = []
    resp = client.simulate_get(path, query_string=query, headers=headers)
    while True:
        assert resp.status_code == 200, resp.text
        data = resp.json["data"]
        pages.append(data["items"])
        if data["next"] is None:
            return pages
        url = urlsplit(data["next"])
        assert f"{url.scheme}://{url.netloc}" == "http://gateway.test"  # a full URL
        assert url.path == path
        assert len(pages) < 50, "paging does not end"
        resp = client.simulate_get(url.path, query_string=url.query, headers=headers)


def _make_keys(client, key, n):
    for i in range(n):
        resp = client.simulate_post("/api/key/generate", headers=bearer(key),
                                    json={"description": f"k{i}"})
        assert resp.status_code == 201, resp.text


def _make_hooks(client, key, n):
    for i in range(n):
        resp = client.simulate_post(HOOKS, headers=bearer(key), json={
            "target_url": f"http://127.0.0.1:9/hook/{i}", "event": "composition.completed"})
        assert resp.status_code == 201, resp.text


def _assert_newest_first(items):
    stamps = [item["createdAt"] for item in items]
    assert stamps == sorted(stamps, reverse=True)


def test_key_list_pages_through_every_key_once(client, make_account):
    _, key = make_account()
    _make_keys(client, key, 6)  # 7 with the account's first key
    pages = _follow(client, KEYS, bearer(key), "limit=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    items = [item for page in pages for item in page]
    ids = [item["id"] for item in items]
    assert len(set(ids)) == 7
    assert all(item["id"] == item["keyId"] for item in items)
    _assert_newest_first(items)
    everything = client.simulate_get(KEYS, headers=bearer(key)).json["data"]
    assert [i["id"] for i in everything["items"]] == ids  # default limit 50: one page
    assert everything["next"] is None


def test_hook_list_pages_through_every_hook_once(lclient, make_account):
    _, key = make_account()
    _make_hooks(lclient, key, 7)
    pages = _follow(lclient, HOOKS, bearer(key), "limit=2")
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    items = [item for page in pages for item in page]
    assert len({item["id"] for item in items}) == 7
    _assert_newest_first(items)
    assert sorted(i["target_url"] for i in items) == sorted(
        f"http://127.0.0.1:9/hook/{i}" for i in range(7))


def test_rows_sharing_a_timestamp_are_each_listed_once(lclient, make_account):
    """Ids break ties, so rows created in the same microsecond are neither skipped nor
    repeated across pages."""
    from jobs.models import Hook
    from oauth.models import ApiKey

    account_id, key = make_account()
    _make_keys(lclient, key, 4)
    _make_hooks(lclient, key, 5)
    same = dt.datetime(2025, 1, 14, 10, 30, 0, 123456)
    with dbmod.connection():
        ApiKey.update(created_at=same).where(ApiKey.account == account_id).execute()
        Hook.update(created_at=same).where(Hook.account == account_id).execute()
    for path, total in ((KEYS, 5), (HOOKS, 5)):
        pages = _follow(lclient, path, bearer(key), "limit=2")
        ids = [item["id"] for page in pages for item in page]
        assert len(ids) == total and len(set(ids)) == total, (path, ids)
        assert ids == sorted(ids, reverse=True)


def test_next_keeps_the_other_query_parameters(client, make_account):
    _, key = make_account()
    _make_keys(client, key, 2)
    data = client.simulate_get(KEYS, query_string="limit=1", headers=bearer(key)).json["data"]
    query = urlsplit(data["next"]).query
    assert "limit=1" in query and "cursor=" in query


@pytest.mark.parametrize("path", [KEYS, HOOKS])
@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"),
    ("cursor=zzz", "cursor"), ("cursor=" + "a" * 40, "cursor"),
])
def test_bad_paging_parameters_are_invalid_request(lclient, make_account, path, query, field):
    _, key = make_account()
    resp = lclient.simulate_get(path, query_string=query, headers=bearer(key))
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["code"] == "INVALID_REQUEST"
    assert resp.json["error"]["details"][0]["field"] == field


def test_a_cursor_from_one_list_is_refused_by_the_other(lclient, make_account):
    _, key = make_account()
    _make_keys(lclient, key, 2)
    _make_hooks(lclient, key, 2)
    key_next = lclient.simulate_get(KEYS, query_string="limit=1",
                                    headers=bearer(key)).json["data"]["next"]
    hook_next = lclient.simulate_get(HOOKS, query_string="limit=1",
                                     headers=bearer(key)).json["data"]["next"]
    for path, url in ((HOOKS, key_next), (KEYS, hook_next)):
        resp = lclient.simulate_get(path, query_string=urlsplit(url).query, headers=bearer(key))
        assert resp.status_code == 400, resp.text
        assert resp.json["error"]["details"][0]["field"] == "cursor"


def test_lists_show_only_the_callers_rows(lclient, make_account):
    _, mine = make_account()
    _, theirs = make_account()
    _make_keys(lclient, mine, 3)
    _make_hooks(lclient, mine, 3)
    assert len(lclient.simulate_get(KEYS, headers=bearer(theirs)).json["data"]["items"]) == 1
    assert lclient.simulate_get(HOOKS, headers=bearer(theirs)).json["data"]["items"] == []
    # A cursor from my list positions their list; it never shows them my rows.
    cursor_url = lclient.simulate_get(HOOKS, query_string="limit=1",
                                      headers=bearer(mine)).json["data"]["next"]
    resp = lclient.simulate_get(HOOKS, query_string=urlsplit(cursor_url).query,
                                headers=bearer(theirs))
    assert resp.status_code == 200 and resp.json["data"]["items"] == []
