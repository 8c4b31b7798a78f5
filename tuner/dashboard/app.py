"""The dashboard: server-side pages and a JSON API over the same reads, read-only.

Pages are rendered by Jinja2 with autoescaping (names, parameter values and error texts
are user input); they update themselves by polling the study's version and fetching
fresh fragments and chart data. The API is documented at /api/openapi.json."""

from __future__ import annotations

import dataclasses
import errno
import hmac
import ipaddress
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from tuner import fronts
from tuner.dashboard import charts, data, pareto_charts
from tuner.display import fmt, fmt_seconds
from tuner.errors import StudyNotFound, TunerError
from tuner.space import Space, describe
from tuner.states import TrialState
from tuner.storage import Storage, StudyRecord

HERE = Path(__file__).parent
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
TOKEN_COOKIE = "tuner_token"
TrialQueryParams = Annotated[data.TrialQuery, Query()]
# Ids and trial numbers are 32-bit INTEGER columns: a larger one overflows the drivers.
Id = Annotated[int, PathParam(ge=0, le=2**31 - 1)]
MIN_TOKEN = 16  # characters: a short token can be guessed over the network
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# What TrustedHostMiddleware compares with a Host header less its port: a name, an address,
# *.domain, or * for any.
HOST_PATTERN = re.compile(r"\*|(\*\.)?[\w.-]+|\[[0-9a-fA-F:.]+\]")
# Plotly's WebGL traces compile shaders with `new Function`: hence 'unsafe-eval'; no inline
# script is ever allowed, so injected markup could not run even if it got through.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
ASSET_CACHE = "max-age=3600"  # the package's own files; pages and data are live: no-store


def secured(request: Request, response: Response) -> Response:
    """Every response, errors included, gets the security headers and says how it may be
    cached: pages and API data never (they are live and may be private), assets a while."""
    response.headers.update(SECURITY_HEADERS)
    path = request.url.path
    asset = path.startswith("/static/") or path == "/vendor/plotly.min.js"
    if not (asset and response.status_code < 400):
        response.headers["Cache-Control"] = "no-store"
    elif "cache-control" not in response.headers:
        response.headers["Cache-Control"] = ASSET_CACHE
    return response


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (a name is resolved first)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _ago(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "-"
    age = max(0.0, now - seconds)
    return f"{age:.0f} s ago" if age < 60 else f"{fmt_seconds(age)} ago"


def check_token(token: str | None) -> None:
    if token is not None and len(token) < MIN_TOKEN:
        raise TunerError(
            f"the token is too short ({len(token)} characters): use at least {MIN_TOKEN}, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe())'")


def as_host_header(name: str) -> str:
    """A host as a Host header names it: an IPv6 address in brackets."""
    try:
        return f"[{ipaddress.IPv6Address(name)}]"
    except ValueError:
        return name


def allowed_hosts_for(host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """The Host headers answered by a server bound to `host`; None: any.

    Bound to loopback, only this machine can connect, but any web page it visits can rebind
    its own name to 127.0.0.1 and read the answers (DNS rebinding): answer only the names
    of loopback and the ones the user gave. Beyond loopback a token is required, and a page
    of another name can neither know it nor get its cookie (host-only, SameSite=Strict):
    names are checked there only when the user gave some."""
    if is_loopback(host):
        return [*LOOPBACK_HOSTS, as_host_header(host), *extra]
    return [as_host_header(host), *extra] if extra else None


def create_app(storage: Storage | str, *, token: str | None = None,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The dashboard over `storage`. `allowed_hosts`: the Host headers it answers (names, or
    `*.domain`; a port is ignored), any if None: serve() passes those of its address."""
    check_token(token)
    hosts = None if allowed_hosts is None else [as_host_header(h) for h in allowed_hosts]
    for name in hosts or ():
        if not HOST_PATTERN.fullmatch(name):
            raise TunerError(f"cannot allow the host {name!r}: give a name or an address "
                             "without a port, or *.domain")
    store = storage if isinstance(storage, Storage) else Storage(storage, create=False)
    cache = data.Cache()
    app = FastAPI(title="Tuner dashboard", version="1", openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="Read-only JSON API of studies, trials and workers.")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(fmt=fmt, seconds=fmt_seconds, when=_when,
                                 quote=lambda s: urllib.parse.quote(str(s), safe=""))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if hosts is not None:  # inside `guard`, so that its 400 gets the headers too
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if token is not None:
            given = (request.query_params.get("token")
                     or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                     or request.cookies.get(TOKEN_COOKIE, ""))
            if not hmac.compare_digest(given.encode(), token.encode()):
                return secured(request, PlainTextResponse(
                    "a token is required: open the URL with ?token=..., or send "
                    "'Authorization: Bearer <token>'", status_code=401))
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return secured(request, response)

    def error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=status)
        title = "Not found" if status == 404 else "Bad request"
        return templates.TemplateResponse(request, "error.html",
                                          {"title": title, "message": message},
                                          status_code=status)

    @app.exception_handler(StudyNotFound)
    async def not_found(request: Request, exc: StudyNotFound) -> Response:
        return error(request, 404, str(exc))

    @app.exception_handler(data.BadQuery)
    async def bad_query(request: Request, exc: data.BadQuery) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer, less the input it echoes (which may be 100 kB long)
        errors = [{k: e[k] for k in ("type", "loc", "msg")} for e in exc.errors()]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": errors}, status_code=422)
        return error(request, 422, "; ".join(  # e.g. "page: Input should be less than..."
            f"{e['loc'][-1]}: {e['msg']}" for e in errors))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # Outside `guard` (Starlette answers a crash last): headers set here. The traceback
        # goes to the server's log, not to whoever asked.
        message = "internal error: the dashboard's log has the details"
        response = (JSONResponse({"detail": message}, status_code=500)
                    if request.url.path.startswith("/api/")
                    else PlainTextResponse(message, status_code=500))
        return secured(request, response)

    def study(study_id: int) -> StudyRecord:
        return store.study_by_id(study_id)

    def completed(record: StudyRecord) -> str:
        """What charts of completed trials depend on: how many there are."""
        return str(store.counts(record.id, states=[TrialState.COMPLETE])[TrialState.COMPLETE])

    def cached(record: StudyRecord, kind: str, compute: Any, key: str | None = None) -> Any:
        """History, parallel coordinates and Pareto data change only when a trial completes;
        importance (seconds of fANOVA) at most every half minute."""
        return cache.get(record, kind, key or completed(record), compute,
                         max_age=30.0 if kind == "importance" else 0)

    def figures(record: StudyRecord) -> dict[str, Any]:
        key = completed(record)  # once for the three cached reads
        points = cached(record, "history", lambda: data.history(store, record), key)
        figs = {"history-trials": charts.history(points, record.metric, over="trials"),
                "history-time": charts.history(points, record.metric, over="time"),
                "curves": charts.curves(data.curves(store, record), record.metric),
                "parallel": charts.parallel(
                    cached(record, "parallel", lambda: data.parallel(store, record), key),
                    record.metric),
                "importance": charts.importance(
                    cached(record, "importance", lambda: data.importance(store, record), key))}
        if record.strategy == "pbt":
            lineage = data.lineage(store, record)
            figs["lineage"] = charts.lineage(lineage["segments"], record.metric)
        if record.multi_objective:
            front = cached(record, "pareto", lambda: data.pareto(store, record), key)
            figs["pareto"] = pareto_charts.pareto(front)
            figs["hypervolume"] = pareto_charts.hypervolume(front)
        return figs

    # -- JSON API -----------------------------------------------------------------------

    @app.get("/api/studies", tags=["studies"])
    def api_studies() -> list[dict[str, Any]]:
        """Every study: setup, trials by state, best value, last activity."""
        return data.studies(store)

    @app.get("/api/study", tags=["studies"])
    def api_study_by_name(name: Annotated[str, Query(max_length=200)]) -> dict[str, Any]:
        """One study, looked up by its name (which may hold any character)."""
        return data.study_dict(store.get_study(name))

    @app.get("/api/studies/{study_id}", tags=["studies"])
    def api_study(study_id: Id) -> dict[str, Any]:
        """One study's setup: strategy, metric, direction, search space, settings."""
        return data.study_dict(study(study_id))

    @app.get("/api/studies/{study_id}/version", tags=["studies"])
    def api_version(study_id: Id) -> dict[str, str]:
        """A token that changes whenever anything shown of the study changes: poll it."""
        return {"version": data.version(store, study(study_id))}

    @app.get("/api/studies/{study_id}/trials", tags=["trials"])
    def api_trials(study_id: int, query: TrialQueryParams) -> dict[str, Any]:
        """One page of trials. `sort`: number, value, epochs, duration or a parameter;
        `order`: best (the default: best values first), asc or desc; `state`: one state;
        `filter`: comma-separated conditions such as `value >= 0.9, units = 64`."""
        return data.trial_page(store, study(study_id), query)

    @app.get("/api/studies/{study_id}/trials/{number}", tags=["trials"])
    def api_trial(study_id: Id, number: Id) -> dict[str, Any]:
        """One trial: parameters, per-epoch metrics, timings, worker, error text."""
        return trial_detail(study(study_id), number)

    @app.get("/api/studies/{study_id}/history", tags=["charts"])
    def api_history(study_id: Id) -> list[dict[str, Any]]:
        """Completed trials in finishing order with the best value so far."""
        record = study(study_id)
        points = cached(record, "history", lambda: data.history(store, record))
        return [dataclasses.asdict(p) for p in points]

    @app.get("/api/studies/{study_id}/curves", tags=["charts"])
    def api_curves(study_id: Id) -> list[dict[str, Any]]:
        """Per-epoch values of the best and the latest trials, with their states."""
        return data.curves(store, study(study_id))

    @app.get("/api/studies/{study_id}/parallel", tags=["charts"])
    def api_parallel(study_id: Id) -> dict[str, Any]:
        """Parameters and values of the latest completed trials."""
        record = study(study_id)
        return cached(record, "parallel", lambda: data.parallel(store, record))

    @app.get("/api/studies/{study_id}/importance", tags=["charts"])
    def api_importance(study_id: Id) -> dict[str, float]:
        """Optuna's fANOVA importance of each parameter, most important first."""
        record = study(study_id)
        return cached(record, "importance", lambda: data.importance(store, record))

    @app.get("/api/studies/{study_id}/lineage", tags=["charts"])
    def api_lineage(study_id: Id) -> dict[str, Any]:
        """PBT: every segment (member, generation, epochs, whom it copied) and the best
        trial's hyperparameter schedule. Empty for other strategies."""
        return data.lineage(store, study(study_id))

    @app.get("/api/studies/{study_id}/pareto", tags=["charts"])
    def api_pareto(study_id: Id) -> dict[str, Any]:
        """Objectives and constraints, each completed trial's objective values (feasible or
        not, on the Pareto front or not), the front's trial numbers, and the hypervolume
        after each feasible trial. One objective: its best trials make the front."""
        record = study(study_id)
        return cached(record, "pareto", lambda: data.pareto(store, record))

    @app.get("/api/studies/{study_id}/charts", tags=["charts"])
    def api_charts(study_id: Id) -> dict[str, Any]:
        """The study page's Plotly figures, by chart id."""
        return figures(study(study_id))

    @app.get("/api/workers", tags=["workers"])
    def api_workers(all: bool = False) -> list[dict[str, Any]]:
        """Workers (live ones unless `all`): host, device, current trial, heartbeat age."""
        return data.worker_dicts(store, store.workers(alive_only=not all))

    def trial_detail(record: StudyRecord, number: int) -> dict[str, Any]:
        found = store.trials(record.id, numbers=[number])
        if not found:
            raise StudyNotFound(f"study {record.name!r} has no trial #{number}")
        trial = found[0]
        worker = None
        if trial.worker_id is not None:
            records = [w for w in store.workers() if w.id == trial.worker_id]
            worker = next(iter(data.worker_dicts(store, records)), None)
        return {**data.trial_dict(trial, record),
                "per_epoch": data.epochs(store, [trial.id])[trial.id], "worker": worker}

    # -- pages ----------------------------------------------------------------------------
    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        fragment = request.query_params.get("fragment")
        template = f"_{fragment}.html" if fragment in context.get("fragments", ()) else name
        return templates.TemplateResponse(request, template,
                                          {"now": store.now(), "ago": _ago, **context})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def studies_page(request: Request) -> HTMLResponse:
        return page(request, "studies.html", studies=data.studies(store),
                    states=list(TrialState), fragments=("studies",))

    @app.get("/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(request: Request, study_id: Id, query: TrialQueryParams) -> HTMLResponse:
        record = study(study_id)
        space = Space.from_dict(record.space)
        try:
            table, error = data.trial_page(store, record, query), None
        except data.BadQuery as exc:
            table, error = None, str(exc)
        summary = next(s for s in data.studies(store) if s["id"] == record.id)
        front = (cached(record, "pareto", lambda: data.pareto(store, record))["front"]
                 if record.multi_objective else None)
        return page(request, "study.html", study=record, summary=summary, table=table,
                    front=front, judged=fronts.judged(record),
                    error=error, query=query, params=space.names,
                    space=[(p.name, describe(p)) for p in space], states=list(TrialState),
                    page_sizes=data.PAGE_SIZES, fragments=("summary", "table"),
                    lineage=data.lineage(store, record) if record.strategy == "pbt" else None)

    @app.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse,
             include_in_schema=False)
    def trial_page(request: Request, study_id: Id, number: Id) -> HTMLResponse:
        record = study(study_id)
        detail = trial_detail(record, number)
        metrics = sorted({k for e in detail["per_epoch"] for k in (e["metrics"] or {})})
        figure = charts.curves([{"number": number, "state": detail["state"],
                                 "epochs": [e["epoch"] for e in detail["per_epoch"]],
                                 "values": [e["value"] for e in detail["per_epoch"]]}],
                               record.metric)
        return page(request, "trial.html", study=record, trial=detail, metrics=metrics,
                    figure=figure, fragments=("trial",), judged=fronts.judged(record))

    @app.get("/workers", response_class=HTMLResponse, include_in_schema=False)
    def workers_page(request: Request, all: bool = False) -> HTMLResponse:
        rows = data.worker_dicts(store, store.workers(alive_only=not all))
        return page(request, "workers.html", workers=rows, all=all, fragments=("workers",))

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    app.state.storage = store
    return app


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token, or with a guessable one."""
    check_token(token)
    if not token and not is_loopback(host):
        raise TunerError(
            f"refusing to listen on {host!r} without a token: anyone who can reach it could "
            "read every study. Pass --token (or set TUNER_DASHBOARD_TOKEN), or bind 127.0.0.1")


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets on every address of `host` (as asyncio would bind them), or one clear error:
    bound here rather than by uvicorn, which would log a traceback-like error and exit."""
    if not 0 < port < 65536:
        raise TunerError(f"port {port} is not a TCP port: choose one from 1 to 65535")
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sockets.append(socket.create_server(address, family=family))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = ("the address is already in use" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        raise TunerError(f"cannot listen on {host}:{port}: {reason}") from None
    return sockets


def serve(storage: Storage | str, *, host: str = "127.0.0.1", port: int = 8080,
          token: str | None = None, allowed_hosts: Sequence[str] = (),
          ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted; `allowed_hosts`: names the server is reached by besides its
    address (see allowed_hosts_for); `ready` is called once it listens."""
    import uvicorn

    check_bind(host, token)
    app = create_app(storage, token=token, allowed_hosts=allowed_hosts_for(host, allowed_hosts))
    sockets = listen(host, port)
    if ready is not None:
        ready()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    uvicorn.Server(config).run(sockets=sockets)
