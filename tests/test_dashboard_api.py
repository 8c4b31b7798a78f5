"""The dashboard's JSON API and pages, in process, on real databases: every endpoint,
sorting and filtering in SQL on SQLite, PostgreSQL and MariaDB, escaping, the token and
read-only guard. (The browser tests drive the same app through the real server.)"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from tests.conftest import SHOWCASE_NAMES
from tuner.dashboard import check_bind, create_app
from tuner.errors import TunerError
from tuner.space import Choice, Float, Int, Space
from tuner.states import TrialState
from tuner.storage import Storage
from tuner.study import rank


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


def test_token_is_required_when_set(showcase):
    with TestClient(create_app(showcase, token="s3cret")) as client:
        assert client.get("/").status_code == 401
        assert client.get("/api/studies").status_code == 401
        assert client.get("/static/dashboard.js").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/studies",
                          headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = client.get("/?token=s3cret")
        assert first.status_code == 200 and "tuner_token" in first.headers["set-cookie"]
        assert client.get("/api/studies").status_code == 200  # the cookie carries it now


def test_a_bind_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "token")
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(TunerError, match="without a token"):
            check_bind(host, None)


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
