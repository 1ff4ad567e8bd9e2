"""/admin: the page, sign-in and sign-out, and the session every admin API route requires.

The page's HTML, script and style answer without a session (they hold no data: the sign-in form is
part of them); every /admin/api route but sign-in answers 401 without a session cookie, and every
change (POST, PUT, PATCH, DELETE) 403 without the session's CSRF token in `X-CSRF-Token`. Chat
platforms add their own admin routes (`build_admin_router(settings, conn)`), behind the same gate.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from ocrhub.admin.passwords import Credential
from ocrhub.admin.sessions import COOKIE, CSRF_HEADER, Session, Sessions, csrf_matches
from ocrhub.config_store import ConfigStore
from ocrhub.secret_box import SecretBox
from ocrhub.settings import Settings

log = logging.getLogger("ocrhub.admin")

PAGE = Path(__file__).with_name("page")
# Platforms' admin routes, by dotted name: each exposes build_admin_router(settings, conn).
PLATFORM_ADMIN: tuple[str, ...] = ("bots.feishu.admin",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# The page runs its own script only, talks only to this origin, and may not be framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class SignIn(BaseModel):
    password: str = Field(max_length=1024)


SESSION_SCHEME = {"type": "apiKey", "in": "cookie", "name": COOKIE, "description": "The admin session: sign in with POST /admin/api/session."}


def declare_session_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark the admin API's operations in the OpenAPI schema as needing the session cookie (and, for
    changes, the X-CSRF-Token header); sign-in itself needs neither."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["adminSession"] = SESSION_SCHEME
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/admin/api/"):
            continue
        for method, operation in operations.items():
            if isinstance(operation, dict) and not (path == "/admin/api/session" and method == "post"):
                operation["security"] = [{"adminSession": []}]
    return schema


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def build_router(settings: Settings, conn: redis.Redis, credential: Credential | None) -> APIRouter:
    sessions = Sessions(conn, settings.admin_session_hours * 3600)
    store = ConfigStore(conn, SecretBox.for_settings(settings))

    def signed_in(request: Request) -> Session:
        session = sessions.find(request.cookies.get(COOKIE))
        if session is None:
            raise HTTPException(401, "sign in first")
        if request.method not in SAFE_METHODS and not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, "missing or wrong CSRF token")
        request.state.admin = session  # platforms' routes note who changed what
        return session

    router = APIRouter()
    page = APIRouter(include_in_schema=False)

    @page.get("/admin")
    def admin_page() -> HTMLResponse:
        return HTMLResponse((PAGE / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    @page.get("/admin/assets/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ("admin.js", "admin.css"):
            raise HTTPException(404, "no such file")
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(PAGE / name, media_type=kind, headers=PAGE_HEADERS)

    @router.post("/admin/api/session", tags=["admin"])
    def sign_in(form: SignIn, request: Request, response: Response) -> dict[str, Any]:
        """Sign in with the admin password: sets the session cookie and returns the CSRF token."""
        if credential is None:
            raise HTTPException(403, "the admin page is off: no admin password is set; set OCRHUB_ADMIN_PASSWORD or run `ocrhub admin set-password`")
        address = client_address(request)
        allowed, wait = sessions.attempts_left(address)
        if not allowed:
            raise HTTPException(429, "too many failed sign-ins; wait and try again", headers={"Retry-After": str(wait)})
        if not credential.accepts(form.password):
            sessions.failed(address)
            log.warning("admin sign-in refused from %s", address)
            raise HTTPException(401, "wrong password")
        sessions.succeeded(address)
        cookie, session = sessions.start(address)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
        response.set_cookie(
            COOKIE, cookie, max_age=int(settings.admin_session_hours * 3600), httponly=True, samesite="strict", secure=secure, path="/admin"
        )
        log.info("admin signed in from %s", address)
        return {"csrf": session.csrf}

    @router.get("/admin/api/session", tags=["admin"])
    def session_state(session: Session = Depends(signed_in)) -> dict[str, Any]:
        """The signed-in session's CSRF token (for a page reloaded while signed in)."""
        return {"csrf": session.csrf, "since": session.started}

    @router.delete("/admin/api/session", tags=["admin"])
    def sign_out(request: Request, session: Session = Depends(signed_in)) -> JSONResponse:
        sessions.end(request.cookies.get(COOKIE))
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/admin")
        return response

    @router.get("/admin/api/changes", tags=["admin"])
    def changes(limit: int = Query(100, ge=1, le=500), session: Session = Depends(signed_in)) -> dict[str, Any]:
        """Who changed what and when (field names only, never values)."""
        return {"changes": [change.to_dict() for change in store.changes(limit)]}

    from ocrhub.admin import operations, routing

    router.include_router(operations.build_router(settings, conn), dependencies=[Depends(signed_in)])
    router.include_router(routing.build_router(settings, conn), dependencies=[Depends(signed_in)])
    for module_name in PLATFORM_ADMIN:
        module = importlib.import_module(module_name)
        router.include_router(module.build_admin_router(settings, conn), dependencies=[Depends(signed_in)])
    router.include_router(page)
    return router
