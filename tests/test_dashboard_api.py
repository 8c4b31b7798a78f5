"""The dashboard's JSON API and pages, in process, on real databases: every endpoint,
sorting and filtering in SQL on SQLite, PostgreSQL and MariaDB, escaping, the token and
read-only guard. (The browser tests drive the same app through the real server.)"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from tests.conftest import (
    SHOWCASE_NAMES,
    TRADEOFF,
    TRADEOFF_FRONT,
    TRADEOFF_INFEASIBLE,
    objective_study,
)
from tuner.dashboard import check_bind, create_app, data
from tuner.dashboard.app import allowed_hosts_for
from tuner.errors import TunerError
from tuner.objectives import parse_objectives
from tuner.ranking import rank
from tuner.space import Choice, Float, Int, Space
from tuner.states import TrialState
from tuner.storage import Storage


@pytest.fixture(scope="module")
def client(showcase):
    with TestClient(create_app(showcase)) as client:
        yield client


@pytest.fixture(scope="module")
def ids(showcase):
    storage = Storage(showcase)
    return {key: storage.get_study(name).id for key, name in SHOWCASE_NAMES.items()}


def test_openapi_documents_every_api_route(client):
    spec = client.get("/api/openapi.json").json()
    routes = {r.path for r in client.app.routes if r.path.startswith("/api/")} - {
        "/api/openapi.json"}
    assert routes <= set(spec["paths"]), routes - set(spec["paths"])
    assert len(routes) >= 12
    trials = spec["paths"]["/api/studies/{study_id}/trials"]["get"]
    assert {p["name"] for p in trials["parameters"]} >= {"sort", "order", "state", "filter",
                                                         "page", "per_page"}


def test_studies_and_one_study_agree_with_the_storage(client, showcase):
    storage = Storage(showcase)
    listed = {s["name"]: s for s in client.get("/api/studies").json()}
    for summary in storage.list_studies():
        row = listed[summary.study.name]
        assert row["best_value"] == summary.best_value
        assert row["trials"] == sum(summary.counts.values())
        assert row["counts"]["PRUNED"] == summary.counts.get(TrialState.PRUNED, 0)
        one = client.get(f"/api/studies/{summary.study.id}").json()
        assert one["space"] == summary.study.space and one["strategy"] == summary.study.strategy
        by_name = client.get("/api/study", params={"name": summary.study.name}).json()
        assert by_name["id"] == summary.study.id
    assert client.get("/api/study", params={"name": "nope"}).status_code == 404
    assert client.get("/api/studies/999").status_code == 404


def test_trials_page_sorts_filters_and_paginates(client, showcase, ids):
    storage = Storage(showcase)
    study = storage.study_by_id(ids["learners"])
    stored = storage.trials(study.id)
    url = f"/api/studies/{study.id}/trials"
    best_first = client.get(url).json()
    ranked = [t.number for t in rank([t for t in stored if t.value is not None], study.sign)]
    values = [t["value"] for t in best_first["trials"]]
    assert values == sorted(values, reverse=True) and best_first["total"] == len(stored)
    assert {t["number"] for t in best_first["trials"]} == {t.number for t in stored}
    assert best_first["trials"][0]["value"] == max(t.value for t in stored if t.value is not None)
    assert ranked[0] in [t["number"] for t in best_first["trials"][:2]]

    pruned = client.get(url, params={"state": "PRUNED"}).json()
    assert pruned["total"] == sum(t.state == TrialState.PRUNED for t in stored) > 0
    assert {t["state"] for t in pruned["trials"]} == {"PRUNED"}

    by_rep = client.get(url, params={"sort": "rep", "order": "desc",
                                     "filter": "rep >= 2, value > 0.5"}).json()
    expected = sorted((t for t in stored if t.params["rep"] >= 2 and (t.value or 0) > 0.5),
                      key=lambda t: (-t.params["rep"], t.number))
    assert [t["number"] for t in by_rep["trials"]] == [t.number for t in expected]

    pages = [client.get(url, params={"sort": "number", "order": "asc", "per_page": 3,
                                     "page": p}).json() for p in (1, 2, 3)]
    assert [t["number"] for p in pages for t in p["trials"]] == sorted(t.number for t in stored)
    assert pages[0]["pages"] == 3


@pytest.mark.parametrize("query, message", [
    ({"filter": "nope > 1"}, "no column or parameter named 'nope'"),
    ({"filter": "rep >= many"}, "rep is a number"),
    ({"filter": "rep"}, "cannot read the filter"),
    ({"sort": "nope"}, "cannot sort by 'nope'"),
    ({"state": "DONE"}, "no trial state 'DONE'"),
    ({"order": "sideways"}, "order is best, asc or desc"),
])
def test_a_bad_query_is_one_clear_400(client, ids, query, message):
    response = client.get(f"/api/studies/{ids['learners']}/trials", params=query)
    assert response.status_code == 400 and message in response.json()["detail"]
    page = client.get(f"/studies/{ids['learners']}", params=query)  # the page shows it too
    assert page.status_code == 200 and 'id="table-error"' in page.text


def test_trial_detail_has_epochs_worker_and_error(client, showcase, ids):
    storage = Storage(showcase)
    failed = storage.trials(ids["faults"], states=[TrialState.FAILED])[0]
    detail = client.get(f"/api/studies/{ids['faults']}/trials/{failed.number}").json()
    assert detail["error"] == failed.error and "Traceback" in failed.error
    assert detail["worker"]["id"] == failed.worker_id and detail["worker"]["host"]
    done = storage.trials(ids["learners"], states=[TrialState.COMPLETE])[0]
    detail = client.get(f"/api/studies/{ids['learners']}/trials/{done.number}").json()
    stored = storage.epochs([done.id])[done.id]
    assert [e["value"] for e in detail["per_epoch"]] == [e["value"] for e in stored]
    assert len(stored) == done.epochs == 9
    # epochs counted from 1, as Keras prints them; the database keeps Keras's 0-based index
    assert [e["epoch"] for e in stored] == list(range(9))
    assert [e["epoch"] for e in detail["per_epoch"]] == list(range(1, 10))
    assert done.best_epoch is not None and detail["best_epoch"] == done.best_epoch + 1
    assert detail["epochs"] == 9  # a count, unchanged
    listed = client.get(f"/api/studies/{ids['learners']}/trials",
                        params={"filter": f"number = {done.number}"}).json()["trials"]
    assert listed[0]["best_epoch"] == done.best_epoch + 1
    assert client.get(f"/api/studies/{ids['learners']}/trials/999").status_code == 404


def test_chart_data(client, showcase, ids):
    storage = Storage(showcase)
    study = storage.study_by_id(ids["learners"])
    done = [t for t in storage.trials(study.id) if t.state == TrialState.COMPLETE]
    history = client.get(f"/api/studies/{study.id}/history").json()
    assert sorted(p["number"] for p in history) == sorted(t.number for t in done)
    assert history[-1]["best"] == max(t.value for t in done)
    assert all(a["best"] <= b["best"] for a, b in zip(history, history[1:], strict=False))

    curves = client.get(f"/api/studies/{study.id}/curves").json()
    states = {c["state"] for c in curves}
    assert {"COMPLETE", "PRUNED"} <= states  # told apart
    pruned = next(c for c in curves if c["state"] == "PRUNED")
    assert len(pruned["values"]) < 9
    assert all(c["epochs"] == list(range(1, len(c["values"]) + 1)) for c in curves)
    drawn = client.get(f"/api/studies/{study.id}/charts").json()["curves"]
    assert {trace["x"][0] for trace in drawn["data"]} == {1}  # the x axis starts at epoch 1

    pbt = ids["pbt"]
    importance = client.get(f"/api/studies/{pbt}/importance").json()
    assert set(importance) == {"units", "learning_rate", "dropout"}
    assert abs(sum(importance.values()) - 1.0) < 1e-6
    parallel = client.get(f"/api/studies/{pbt}/parallel").json()
    assert len(parallel["trials"]) == storage.counts(pbt)[TrialState.COMPLETE]

    lineage = client.get(f"/api/studies/{pbt}/lineage").json()
    pbt_trials = storage.trials(pbt)
    assert len(lineage["segments"]) == len(pbt_trials)
    best = storage.best_trial(storage.study_by_id(pbt))
    schedule = lineage["schedule"]
    assert schedule[-1]["number"] == best.number and schedule[0]["attrs"]["segment"]["start"] == 0
    for earlier, later in zip(schedule, schedule[1:], strict=False):
        assert later["attrs"]["segment"]["restore"] == earlier["number"]
    assert client.get(f"/api/studies/{study.id}/lineage").json()["segments"] == []

    figures = client.get(f"/api/studies/{pbt}/charts").json()
    assert set(figures) == {"history-trials", "history-time", "curves", "parallel",
                            "importance", "lineage"}
    assert all(f["data"] for f in figures.values())


def test_workers(client, showcase):
    storage = Storage(showcase)
    listed = client.get("/api/workers", params={"all": True}).json()
    assert [w["id"] for w in listed] == [w.id for w in storage.workers()]
    assert {w["status"] for w in listed} == {"stopped"}  # in-process runs end cleanly
    assert client.get("/api/workers").json() == []
    assert "No worker is running" in client.get("/workers").text


def test_pages_escape_user_input(client, ids, showcase):
    raw = SHOWCASE_NAMES["faults"]
    escaped = "&lt;b&gt;faults&lt;/b&gt; &amp; &#34;co&#34;"
    for path in ("/", f"/studies/{ids['faults']}", f"/studies/{ids['faults']}/trials/1"):
        page = client.get(path)
        assert page.status_code == 200
        assert escaped in page.text and raw not in page.text, path
    failed = Storage(showcase).trials(ids["faults"], states=[TrialState.FAILED])[0]
    page = client.get(f"/studies/{ids['faults']}/trials/{failed.number}").text
    assert "Traceback" in failed.error and str(escape(failed.error)) in page
    assert "default-src 'self'" in client.get("/").headers["content-security-policy"]


def test_read_only(client, ids):
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)(f"/api/studies/{ids['learners']}")
        assert response.status_code == 405, method


TOKEN = "s3cret-0123456789"


def test_token_is_required_when_set(showcase):
    with TestClient(create_app(showcase, token=TOKEN)) as client:
        assert client.get("/").status_code == 401
        assert client.get("/api/studies").status_code == 401
        assert client.get("/static/dashboard.js").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/studies",
                          headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        first = client.get(f"/?token={TOKEN}")
        assert first.status_code == 200 and "tuner_token" in first.headers["set-cookie"]
        assert client.get("/api/studies").status_code == 200  # the cookie carries it now


def test_a_bind_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(TunerError, match="without a token"):
            check_bind(host, None)


def test_a_short_token_is_refused(showcase):
    for short in ("", "token", "x" * 15):
        for host in ("127.0.0.1", "0.0.0.0"):
            with pytest.raises(TunerError, match="too short .* at least 16"):
                check_bind(host, short)
        with pytest.raises(TunerError, match="too short"):
            create_app(showcase, token=short)
    check_bind("0.0.0.0", "x" * 16)
    create_app(showcase, token="x" * 16)


# -- the Host header (DNS rebinding) ----------------------------------------------------------

def test_only_the_names_of_the_bound_address_are_answered(showcase):
    """A web page can point its own name at 127.0.0.1: its requests then reach the server
    with its name in the Host header, and must be refused."""
    hosts = allowed_hosts_for("127.0.0.1", ["tuner.example.org"])
    with TestClient(create_app(showcase, allowed_hosts=hosts)) as client:
        for host in ("127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:8080", "[::1]:8080",
                     "tuner.example.org", "tuner.example.org:443"):
            response = client.get("/api/studies", headers={"Host": host})
            assert response.status_code == 200, host
            assert {s["name"] for s in response.json()} == set(SHOWCASE_NAMES.values())
        for host in ("evil.example.com", "evil.example.com:8080", "127.0.0.1.evil.example.com",
                     "localhost.evil.example.com", "tuner.example.org.evil.com", "[::2]", "",
                     "evil.example.com@127.0.0.1"):
            for path in ("/api/studies", "/", "/static/dashboard.js"):
                response = client.get(path, headers={"Host": host})
                assert response.status_code == 400, (host, path)
                assert "learners" not in response.text and len(response.text) < 100
                assert response.headers["x-content-type-options"] == "nosniff"


def test_which_names_a_bound_address_answers(showcase):
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts_for("127.0.0.1") == [*loopback, "127.0.0.1"]
    assert allowed_hosts_for("::1", ["a.example"]) == [*loopback, "[::1]", "a.example"]
    # beyond loopback the token guards it: names are checked only when the user gave some
    assert allowed_hosts_for("0.0.0.0") is None
    assert allowed_hosts_for("192.0.2.1", ["a.example"]) == ["192.0.2.1", "a.example"]
    for name in ("a.example:8080", "http://a.example", "a*.example", "a.example/x", ""):
        with pytest.raises(TunerError, match="cannot allow the host"):
            create_app(showcase, allowed_hosts=[name])


def test_beyond_loopback_a_host_check_applies_only_to_names_given(showcase):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    app = create_app(showcase, token=TOKEN, allowed_hosts=allowed_hosts_for("0.0.0.0"))
    with TestClient(app) as client:
        assert client.get("/api/studies", headers={**bearer, "Host": "any.example"}).is_success
        assert client.get("/api/studies", headers={"Host": "any.example"}).status_code == 401
    app = create_app(showcase, token=TOKEN,
                     allowed_hosts=allowed_hosts_for("0.0.0.0", ["tuner.example.org"]))
    with TestClient(app) as client:
        assert client.get("/api/studies",
                          headers={**bearer, "Host": "tuner.example.org"}).is_success
        assert client.get("/api/studies",
                          headers={**bearer, "Host": "any.example"}).status_code == 400


# -- hostile and out-of-range input -----------------------------------------------------------

SPACES = " " * 120_000
LONG = 60_000  # characters: httpx sends no longer a query (the real server gets 120,000)


@pytest.mark.parametrize("query", [
    {"filter": " " * LONG},
    {"filter": "value = a" + " " * LONG + "b"},  # 9 s: the old regex backtracked quadratically
    {"filter": "value >= 0.9, " * 100},
    {"sort": "x" * LONG},
    {"state": "S" * LONG},
    {"order": "o" * LONG},
])
def test_long_queries_are_refused_at_once(client, ids, query):
    url = f"/api/studies/{ids['learners']}/trials"
    started = time.monotonic()
    response = client.get(url, params=query)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 400
    assert "too long" in response.json()["detail"] and len(response.text) < 200
    page = client.get(f"/studies/{ids['learners']}", params=query)
    assert page.status_code == 200 and 'id="table-error"' in page.text and "too long" in page.text


def test_the_filter_parser_is_linear(showcase, ids):
    """Past the length bound too: parsing never backtracks (the bound is a second guard)."""
    study = Storage(showcase).study_by_id(ids["learners"])
    space = Space.from_dict(study.space)
    started = time.monotonic()
    for text in (f"value = a{SPACES}b", f"rep{SPACES}>{SPACES}1", f"lr = {SPACES}0.1{SPACES}"):
        try:
            data.parse_filter(text, study, space)
        except data.BadQuery:
            pass
    assert time.monotonic() - started < 1.0
    assert data.parse_filter(f"rep{SPACES}>= 2", study, space)[0].value == 2.0
    assert [(f.field, f.op, f.value) for f in data.parse_filter(
        "rep != 1, lr<=0.1, value>0.5", study, space)] == [
        ("rep", "!=", 1.0), ("lr", "<=", 0.1), ("value", ">", 0.5)]


def test_a_long_study_name_is_refused(client):
    response = client.get("/api/study", params={"name": "n" * LONG})
    assert response.status_code == 422 and len(response.text) < 1000


@pytest.fixture
def small_study(storage_url):
    """A study of five trials, three completed with a value and an epoch, on each database."""
    storage = Storage(storage_url)
    space = Space(units=Int(8, 512), act=Choice(["relu", "tanh"]))
    study = storage.create_study("small", metric="m", direction="minimize", strategy="random",
                                 seed=1, space=space.to_dict(), settings={})
    storage.enqueue_trials(study.id, [(n, {"units": 8 + n, "act": "relu"}, None)
                                      for n in range(5)])
    worker = storage.register_worker(host="h", pid=1, device="cpu", study_id=study.id)
    for n in range(3):
        trial = storage.claim_trial(study.id, worker)
        storage.report_epoch(trial.id, worker, 0, float(n), {"m": float(n)})
        storage.finish_trial(trial.id, worker, TrialState.COMPLETE, value=float(n), best_epoch=0)
    return storage, study


def test_out_of_range_numbers_are_a_clear_error(small_study):
    """Numbers past what a database driver takes (a 500 on SQLite and PostgreSQL), and nan
    or inf in a filter (a 500 on MariaDB), are the user's error, on pages and in the API."""
    storage, study = small_study
    with TestClient(create_app(storage), raise_server_exceptions=False) as client:
        api, page = f"/api/studies/{study.id}/trials", f"/studies/{study.id}"
        for huge in (9223372036854775807, 2**64, data.MAX_PAGE + 1):
            response = client.get(api, params={"page": huge})
            assert response.status_code == 422, huge
            assert response.json()["detail"][0]["loc"] == ["query", "page"]
            response = client.get(page, params={"page": huge})
            assert response.status_code == 422 and "page: Input should be less" in response.text
            assert "<h1>Bad request</h1>" in response.text
        last = client.get(api, params={"page": data.MAX_PAGE, "per_page": 200}).json()
        assert last["trials"] == [] and last["total"] == 5

        for field in ("value", "units", "number"):
            for number in ("nan", "inf", "-inf", "NaN", "1e400"):
                condition = f"{field} > {number}"
                response = client.get(api, params={"filter": condition})
                assert response.status_code == 400, condition
                assert f"cannot compare it with '{number}'" in response.json()["detail"]
                response = client.get(page, params={"filter": condition})
                assert response.status_code == 200 and 'id="table-error"' in response.text
        big = client.get(api, params={"filter": "value < 1e300, number > -1e300"}).json()
        assert big["total"] == 3

        # ids and trial numbers: 32-bit columns
        for path in (f"/api/studies/{2**31}", f"/api/studies/{study.id}/trials/{2**63}",
                     f"/studies/{2**64}", f"/studies/{study.id}/trials/{2**31}",
                     "/api/studies/-1"):
            assert client.get(path).status_code == 422, path
        for path in (f"/api/studies/{2**31 - 1}", f"/api/studies/{study.id}/trials/{2**31 - 1}",
                     f"/studies/{2**31 - 1}", f"/studies/{study.id}/trials/{2**31 - 1}"):
            assert client.get(path).status_code == 404, path


# -- headers ------------------------------------------------------------------------------------

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "x-frame-options": "DENY"}


def assert_secured(response, cache="no-store"):
    assert "default-src 'self'" in response.headers.get("content-security-policy", "")
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers.get("cache-control") == cache, response.status_code


def broken_copy(url: str, folder: Path, name: str) -> str:
    """A copy of a SQLite database whose study `name` has a search space no code can read:
    a real fault for the dashboard to meet."""
    source, path = sqlite3.connect(url.removeprefix("sqlite:///")), folder / "broken.db"
    with sqlite3.connect(path) as target:
        source.backup(target)
        target.execute("UPDATE studies SET space = ? WHERE name = ?",
                       ('{"x": {"type": "nope"}}', name))
    source.close()
    return f"sqlite:///{path}"


def test_every_response_carries_the_security_headers(client, showcase, ids, tmp_path):
    learners = ids["learners"]
    for path in ("/", f"/studies/{learners}", f"/studies/{learners}/trials/0", "/workers",
                 "/api/studies", f"/api/studies/{learners}/charts", "/api/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200
        assert_secured(response)
    for path, status in [("/nope", 404), ("/studies/999", 404), ("/api/studies/999", 404),
                         (f"/api/studies/{learners}/trials/999", 404),
                         ("/static/nope.js", 404), (f"/studies/{learners}?page=x", 422),
                         (f"/api/studies/{learners}/trials?page=0", 422),
                         (f"/api/studies/{learners}/trials?filter=nope>1", 400)]:
        response = client.get(path)
        assert response.status_code == status, path
        assert_secured(response)
    response = client.post(f"/api/studies/{learners}")
    assert response.status_code == 405
    assert_secured(response)
    # assets may be cached: they change only with the installed package
    for path in ("/static/dashboard.js", "/static/dashboard.css", "/vendor/plotly.min.js"):
        response = client.get(path)
        assert response.status_code == 200
        assert_secured(response, cache=response.headers["cache-control"])
        assert response.headers["cache-control"].startswith("max-age=")

    with TestClient(create_app(showcase, token=TOKEN)) as guarded:
        assert_secured(guarded.get("/api/studies"))
        response = guarded.get("/")
        assert response.status_code == 401
        assert_secured(response)
        assert_secured(guarded.get("/static/dashboard.js"))  # 401: not cacheable either
    with TestClient(create_app(showcase, allowed_hosts=["127.0.0.1"])) as checked:
        response = checked.get("/", headers={"Host": "evil.example.com"})
        assert response.status_code == 400
        assert_secured(response)

    broken = create_app(broken_copy(showcase, tmp_path, "learners"))
    with TestClient(broken, raise_server_exceptions=False) as crashing:
        assert crashing.get("/").status_code == 200  # the other pages still work
        for path in (f"/studies/{learners}", f"/api/studies/{learners}/trials"):
            response = crashing.get(path)
            assert response.status_code == 500, path
            assert_secured(response)
            assert "internal error" in response.text and len(response.text) < 200
            assert "Traceback" not in response.text and "nope" not in response.text


def test_trial_page_query_in_sql(storage_url):
    """Sorting by a numeric or a string parameter and filtering run in the database: the
    JSON paths differ between SQLite, PostgreSQL and MySQL."""
    storage = Storage(storage_url)
    space = Space(units=Int(8, 512, log=True), act=Choice(["relu", "tanh", "gelu"]),
                  lr=Float(1e-4, 1e-1, log=True))
    study = storage.create_study("q", metric="m", direction="minimize", strategy="random",
                                 seed=1, space=space.to_dict(), settings={})
    params = [{"units": 8 * (n % 7 + 1) * (1 + n % 2), "act": ["relu", "tanh", "gelu"][n % 3],
               "lr": 10 ** -(1 + n % 4)} for n in range(30)]
    storage.enqueue_trials(study.id, [(n, p, None) for n, p in enumerate(params)])
    worker = storage.register_worker(host="h", pid=1, device="cpu", study_id=study.id)
    for n in range(24):  # 6 stay QUEUED, with no value
        trial = storage.claim_trial(study.id, worker)
        storage.finish_trial(trial.id, worker, TrialState.COMPLETE, value=float((n * 7) % 11))
    numeric = ["units", "lr"]

    total, page = storage.trial_page(study.id, sort="units", numeric=numeric, limit=100)
    assert total == 30
    assert [t.params["units"] for t in page] == sorted(p["units"] for p in params)
    _, page = storage.trial_page(study.id, sort="act", descending=True, numeric=numeric,
                                 limit=100)
    assert [t.params["act"] for t in page] == sorted((p["act"] for p in params), reverse=True)
    _, page = storage.trial_page(study.id, sort="value", numeric=numeric, limit=100)
    assert [t.value for t in page[:24]] == sorted(t.value for t in page[:24])
    assert all(t.value is None for t in page[24:])  # missing values last
    _, page = storage.trial_page(study.id, sort="value", descending=True, numeric=numeric,
                                 limit=100)
    assert all(t.value is None for t in page[24:])  # in both directions

    from tuner.storage import TrialFilter
    filters = [TrialFilter("units", ">=", 32), TrialFilter("act", "!=", "relu"),
               TrialFilter("lr", "<", 0.05)]
    total, page = storage.trial_page(study.id, filters=filters, numeric=numeric, limit=100)
    expected = [n for n, p in enumerate(params)
                if p["units"] >= 32 and p["act"] != "relu" and p["lr"] < 0.05]
    assert total == len(expected) > 0
    assert sorted(t.number for t in page) == expected
    total, page = storage.trial_page(study.id, states=[TrialState.QUEUED],
                                     filters=[TrialFilter("act", "=", "gelu")],
                                     numeric=numeric, offset=1, limit=1)
    assert total == sum(1 for n in range(24, 30) if params[n]["act"] == "gelu")
    assert len(page) == 1


# -- several objectives and constraints -------------------------------------------------------

def tradeoff_study(url, name="tradeoff", **changes):
    storage = Storage(url)
    return storage, objective_study(storage, name, **{**TRADEOFF, **changes})


def test_pareto_api_gives_the_feasible_front_and_its_hypervolume(sqlite_url):
    storage, study = tradeoff_study(sqlite_url)
    with TestClient(create_app(storage)) as client:
        got = client.get(f"/api/studies/{study.id}/pareto").json()
        assert got["front"] == TRADEOFF_FRONT  # not #2 or #7: they break the constraint
        assert got["front"] == [t.number for t in study.front(storage.trials(study.id))]
        assert got["objectives"] == [{"name": "acc", "direction": "maximize"},
                                     {"name": "params", "direction": "minimize"}]
        assert got["constraints"] == ["latency_ms <= 2"]
        points = {p["number"]: p for p in got["points"]}
        assert sorted(points) == [0, 1, 2, 3, 4, 5, 7]  # not the failed #6
        assert [n for n, p in points.items() if not p["feasible"]] == TRADEOFF_INFEASIBLE
        assert points[2]["broken"] == ["latency_ms <= 2"] and points[2]["values"] == [0.95, 40]
        assert [n for n, p in points.items() if p["front"]] == sorted(TRADEOFF_FRONT)
        # from the worst feasible values (0.7, 200): the boxes under #0, #4 and #1
        assert got["reference"] == [0.7, 200.0]
        hv = [h["hypervolume"] for h in got["hypervolume"]]
        assert [h["number"] for h in got["hypervolume"]] == [0, 1, 3, 4, 5]
        assert hv == sorted(hv)
        assert hv[-1] == pytest.approx(0.2 * 100 + 0.15 * 20 + 0.1 * 30)

        figures = client.get(f"/api/studies/{study.id}/charts").json()
        traces = {t["name"]: t for t in figures["pareto"]["data"]}
        front = traces["Pareto front"]
        assert front["type"] == "scatter" and front["line"]["shape"] == "vh"
        assert (front["x"], front["y"]) == ([0.8, 0.85, 0.9], [50, 80, 100])
        assert [t.split("<br>")[0] for t in traces["infeasible"]["text"]] == ["#2", "#7"]
        assert traces["infeasible"]["marker"]["symbol"] == "x"
        assert [t.split("<br>")[0] for t in traces["dominated"]["text"]] == ["#3", "#5"]
        assert traces["dominated"]["text"][0] == "#3<br>acc = 0.7<br>params = 200"
        layout = figures["pareto"]["layout"]
        assert layout["xaxis"]["title"]["text"] == "acc (maximize)"
        assert layout["yaxis"]["title"]["text"] == "params (minimize)"
        assert figures["hypervolume"]["data"][0]["y"] == pytest.approx(hv)

        # the table and the trial page: a column per objective, the constraints' verdict
        rows = client.get(f"/api/studies/{study.id}/trials",
                          params={"sort": "number", "order": "asc"}).json()["trials"]
        assert [r["values"] for r in rows[:2]] == [[0.9, 100], [0.8, 50]]
        assert [r["verdict"] for r in rows] == ["feasible", "feasible", "breaks latency_ms <= 2",
                                                "feasible", "feasible", "feasible", None,
                                                "breaks latency_ms <= 2"]
        page = client.get(f"/studies/{study.id}").text
        assert 'id="chart-pareto"' in page and 'id="chart-hypervolume"' in page
        assert "acc ↑</a></th>" in page and "params ↓</th>" in page
        assert '<td class="verdict broken">breaks latency_ms &lt;= 2</td>' in page
        assert '<dd id="front-size">3 trials</dd>' in page
        trial = client.get(f"/studies/{study.id}/trials/2").text
        assert '<dd class="objective-value">40</dd>' in trial
        assert '<dd id="trial-verdict">breaks latency_ms &lt;= 2</dd>' in trial
        assert 'id="measures"' in trial and "latency_ms &lt;= 2: broken" in trial


def test_three_objectives_draw_a_3d_scatter_and_more_the_first_three(sqlite_url):
    storage = Storage(sqlite_url)
    points = [[0.9, 100.0, 3.0], [0.8, 50.0, 2.0], [0.7, 200.0, 9.0], [0.95, 300.0, 1.0]]
    trials = [(p, {"params": p[1], "latency_ms": p[2]}) for p in points]
    objectives = [("acc", "maximize"), ("params", "minimize"), ("latency_ms", "minimize")]
    three = objective_study(storage, "three", objectives, [], trials)
    four = objective_study(storage, "four", [*objectives, ("loss", "minimize")], [],
                           [(p + [0.1], m) for p, m in trials])
    with TestClient(create_app(storage)) as client:
        figure = client.get(f"/api/studies/{three.id}/charts").json()["pareto"]
        assert {t["type"] for t in figure["data"]} == {"scatter3d"}
        front = next(t for t in figure["data"] if t["name"] == "Pareto front")
        assert sorted(front["z"]) == [1.0, 2.0, 3.0]  # #2 is dominated by #0
        scene = figure["layout"]["scene"]
        assert [scene[f"{a}axis"]["title"]["text"] for a in "xyz"] == [
            "acc (maximize)", "params (minimize)", "latency_ms (minimize)"]
        figure = client.get(f"/api/studies/{four.id}/charts").json()["pareto"]
        assert {t["type"] for t in figure["data"]} == {"scatter3d"}
        assert all("x" in t and "z" in t for t in figure["data"])
        assert "first 3 of 4" in figure["layout"]["title"]["text"]
        assert all("loss = 0.1" in text for t in figure["data"] for text in t["text"])


def test_a_single_objective_study_has_no_pareto_chart(client, ids):
    figures = client.get(f"/api/studies/{ids['learners']}/charts").json()
    assert "pareto" not in figures and "hypervolume" not in figures
    page = client.get(f"/studies/{ids['learners']}").text
    assert "chart-pareto" not in page and 'id="best-value"' in page
    assert "constraints" not in page and "verdict" not in page


def test_hostile_objective_and_constraint_names_are_escaped(sqlite_url):
    bad, worse = "<script>alert(1)</script>", '<img src=x onerror="alert(2)">'
    parse_objectives([bad, worse])  # a study file may name them so
    storage, study = tradeoff_study(
        sqlite_url, name="hostile", objectives=[(bad, "maximize"), (worse, "minimize")],
        constraints=[(bad, ">=", 0.75)],
        trials=[([0.9, 1.0], {bad: 0.9, worse: 1.0}), ([0.7, 0.5], {bad: 0.7, worse: 0.5}),
                ([0.8, 2.0], {bad: 0.8, worse: 2.0})])
    with TestClient(create_app(storage)) as client:
        for path in ("/", f"/studies/{study.id}", f"/studies/{study.id}/trials/1",
                     f"/studies/{study.id}?fragment=table"):
            text = client.get(path).text
            assert bad not in text and worse not in text and "<img" not in text, path
            assert str(escape(bad)) in text, path
        figures = client.get(f"/api/studies/{study.id}/charts").json()
        for name in ("pareto", "hypervolume"):
            flat = json.dumps(figures[name])
            assert "<script" not in flat and "<img" not in flat, name
            assert "&lt;script&gt;" in flat, name
        traces = {t["name"]: t for t in figures["pareto"]["data"]}
        assert traces["infeasible"]["text"] == [
            "#1<br>&lt;script&gt;alert(1)&lt;/script&gt; = 0.7<br>"
            "&lt;img src=x onerror=&quot;alert(2)&quot;&gt; = 0.5<br>"
            "breaks &lt;script&gt;alert(1)&lt;/script&gt; &gt;= 0.75"]
        # the JSON data gives names as they are: it is data, not markup
        assert client.get(f"/api/studies/{study.id}/pareto").json()["objectives"][0]["name"] == bad
