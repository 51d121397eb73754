"""The FastAPI app the api-server mounts under ``/backup-ops``: the health endpoint, the catalog API, the page.

* ``GET /backup-ops/health``: every destination's health as an uptime monitor may see it
  (``backup_ops.core.public_health``: no secret, no archive name), 200 when every destination is
  healthy, 503 otherwise or when the config cannot be read. Public unless
  ``ui.health_requires_auth`` is true. ``HEAD`` answers the same status without a body.
* ``GET /backup-ops/api/backups?destination=&page=&per_page=``: the catalog
  (``backup_ops.core.catalog``), one page of each destination's backups; needs an Airflow login.
* ``GET /backup-ops/``: the page (``page.render_page``); needs an Airflow login, and sends a
  browser without one to Airflow's login first.

A login is the api-server's own: ``Authorization: Bearer <token>`` from ``POST /auth/token``, or
the UI's ``_token`` cookie (which the page inside the UI's iframe carries); without one the API
answers 401. Everything comes from one ``CatalogCache``. Airflow's security module is imported
when the app is built, and the app only when the api-server asks for it (see the plugin).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from backup_ops.airflow.ui.cache import CatalogCache, CatalogState
from backup_ops.airflow.ui.page import SCRIPT, STYLE, PageModel, Section, page_param, render_page
from backup_ops.core.catalog import MAX_PAGE_SIZE, catalog, destination_catalog, page_window
from backup_ops.core.errors import BackupError
from backup_ops.core.public_health import public_health, unavailable_health

URL_PREFIX = "/backup-ops"
DEFAULT_PER_PAGE = 100
# An archive box, drawn in the current text colour so it suits the UI's light and dark modes.
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
        'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="3" y="4" width="18" height="5" '
        'rx="1"/><path d="M5 9v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1V9"/><path d="M10 13h4"/></svg>')


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only the page's own inline style and script run; it loads nothing and may be framed by Airflow's UI only.
PAGE_SECURITY = {
    "Content-Security-Policy": (f"default-src 'none'; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
                                "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(cache: CatalogCache | None = None) -> FastAPI:
    """The FastAPI app, with one cache for all its routes."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_authenticated

    cache = cache or CatalogCache()
    app = FastAPI(title="backup-ops", docs_url=None, redoc_url=None, openapi_url=None)
    login_required = [Depends(requires_authenticated())]

    @app.exception_handler(HTTPException)
    async def login_first(request: Request, exc: HTTPException) -> Response:
        """A browser without a login is sent to Airflow's login page, then back; API clients get the status."""
        if request.url.path.rstrip("/") == _app_base(request) and exc.status_code in (401, 403) \
                and "text/html" in request.headers.get("accept", ""):
            target = f"{airflow_base(_app_base(request))}/api/v2/auth/login?next={quote(str(request.url), safe='')}"
            return RedirectResponse(target, status_code=307)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/icon.svg")
    def icon() -> Response:
        """The navigation entry's icon (public: the UI draws it before anyone opens the page)."""
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health(request: Request) -> Response:
        try:
            settings = await run_in_threadpool(cache.settings)
        except BackupError as exc:
            return _health_response(request, unavailable_health(str(exc), _now()), healthy=False)
        if settings.ui.health_requires_auth:
            await get_user(request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))
        try:
            state = await run_in_threadpool(cache.state)
        except BackupError as exc:
            return _health_response(request, unavailable_health(str(exc), _now()), healthy=False)
        body = public_health(state.config.backup.name, state.reports, state.checked_at)
        return _health_response(request, body, healthy=body["healthy"])

    @app.get("/api/backups", dependencies=login_required)
    def backups(destination: str | None = None, page: int = Query(1, ge=1),
                per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_PAGE_SIZE)) -> Response:
        state = _state_or_503(cache)
        entries = [entry for entry in state.destinations if destination in (None, entry.name)]
        if not entries:
            names = ", ".join(entry.name for entry in state.destinations) or "(none)"
            raise HTTPException(404, f"There is no destination named {destination!r}; configured: {names}.")
        found = []
        for entry in entries:
            window = page_window(len(entry.report.snapshot.backups), page, per_page)
            found.append(destination_catalog(entry.report, cache.rows(state, entry.name, window), window))
        return JSONResponse(catalog(state.config.backup.name, state.checked_at, found),
                            headers={"Cache-Control": "no-store"})

    @app.get("/", dependencies=login_required)
    def page(request: Request) -> Response:
        try:
            state = cache.state()
        except BackupError as exc:
            return HTMLResponse(_error_page(str(exc)), status_code=503, headers=PAGE_SECURITY)
        return HTMLResponse(page_html(cache, state, request.query_params, _app_base(request)), headers=PAGE_SECURITY)

    return app


def page_html(cache: CatalogCache, state: CatalogState, query: Mapping[str, str], app_base: str = URL_PREFIX) -> str:
    """The page for ``state``, each destination at the page its ``page_<destination>`` query parameter names."""
    size = state.config.ui.page_size
    pages: dict[str, int] = {}
    sections = []
    for entry in state.destinations:
        wanted = query.get(page_param(entry.name), "1")
        number = int(wanted) if wanted.isascii() and wanted.isdigit() and int(wanted) >= 1 else 1
        window = page_window(len(entry.report.snapshot.backups), number, size)
        pages[entry.name] = window.number
        sections.append(Section(entry.report, cache.rows(state, entry.name, window), window))
    return render_page(PageModel(backup_name=state.config.backup.name, checked_at=state.checked_at,
                                 age_seconds=cache.age(state), cache_seconds=state.config.ui.cache_seconds,
                                 sections=sections, pages=pages, airflow_base=airflow_base(app_base),
                                 app_base=app_base))


def _state_or_503(cache: CatalogCache) -> CatalogState:
    try:
        return cache.state()
    except BackupError as exc:
        raise HTTPException(503, str(exc)) from exc


def _health_response(request: Request, body: dict[str, Any], *, healthy: bool) -> Response:
    status = 200 if healthy else 503
    headers = {"Cache-Control": "no-store"}
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


def _app_base(request: Request) -> str:
    """The path this app is mounted at (``/backup-ops``, below Airflow's base path if it has one)."""
    return str(request.scope.get("root_path", "")).rstrip("/") or URL_PREFIX


def airflow_base(app_base: str) -> str:
    """The path Airflow's UI is served at, from where this app is mounted: '' at the root of the host."""
    return app_base[: -len(URL_PREFIX)] if app_base.endswith(URL_PREFIX) else ""


def _error_page(sentence: str) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>backup-ops</title>"
            f"<style>{STYLE}</style></head><body><h1>backup-ops</h1><p class=\"error\">{escape(sentence)}</p>"
            "</body></html>")


def _now() -> datetime:
    return datetime.now(UTC)
