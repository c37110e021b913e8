"""The console: server-rendered pages over the same service functions as the API.

Signed in with a token, kept by a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS);
every form that changes something carries the session's form token, checked here, against
cross-site requests. Pages escape everything they show (Jinja2 autoescape).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from models import Action, MissedInvoices, Source, describe_invalid
from models.moments import MomentError, both_clocks
from suspensions import access
from suspensions.access import Principal, Role
from suspensions.api.service import Forbidden, NotFound, Operations

HERE = Path(__file__).parent
COOKIE = "suspensions_session"
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


class SignInRequired(Exception):
    pass


class Session:
    def __init__(self, principal: Principal, csrf: str, cookie: str) -> None:
        self.principal, self.csrf, self.cookie = principal, csrf, cookie


async def session(request: Request) -> Session:
    ops: Operations = request.app.state.operations
    cookie = request.cookies.get(COOKIE)
    if cookie:
        async with ops.pool.acquire() as conn:
            found = await access.session_principal(conn, cookie)
        if found is not None:
            return Session(found[0], found[1], cookie)
        request.app.state.metrics.auth_failures.labels(reason="session").inc()
    raise SignInRequired()


Signed = Annotated[Session, Depends(session)]


def page(request: Request, template: str, status: int = 200, signed: Session | None = None,
         **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        request=request, principal=signed.principal if signed else None, csrf=signed.csrf if signed else "",
        spaces=sorted(signed.principal.spaces) if signed else [], Role=Role, **context)
    return HTMLResponse(html, status_code=status)


def _checked_form(signed: Session, csrf: str) -> None:
    if csrf != signed.csrf:
        raise Forbidden(Role.VIEWER)  # a form not from our page: refused like a role that may not act


def register_console(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, _: SignInRequired) -> Response:
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)

    @app.get("/", include_in_schema=False)
    async def home(signed: Signed) -> RedirectResponse:
        return RedirectResponse(f"/console/spaces/{quote(sorted(signed.principal.spaces)[0])}/customers",
                                status_code=303)

    @app.get("/signin", include_in_schema=False)
    async def signin_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002
        return page(request, "signin.html", next=next if next.startswith("/") else "/")

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
        ops: Operations = request.app.state.operations
        async with ops.pool.acquire() as conn:
            principal = await access.principal_for_token(conn, token.strip())
            if principal is None:
                request.app.state.metrics.auth_failures.labels(reason="unknown or revoked").inc()
                return page(request, "signin.html", status=401, next=next, error="Unknown or revoked token.")
            cookie, _ = await access.open_session(conn, principal)
        response = RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/",
                                    status_code=303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=secure,
                            max_age=int(access.SESSION_LIFETIME.total_seconds()), path="/")
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request, signed: Signed, csrf: Annotated[str, Form()]) -> RedirectResponse:
        _checked_form(signed, csrf)
        ops: Operations = request.app.state.operations
        async with ops.pool.acquire() as conn:
            await access.close_session(conn, signed.cookie)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, _: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "not found"}, status_code=404)
        return page(request, "not_found.html", status=404)

    @app.get("/console/spaces/{space}/customers", include_in_schema=False)
    async def customers(request: Request, space: str, signed: Signed, q: str = "", suspended: str = "",
                        cursor: str = "") -> HTMLResponse:
        ops: Operations = request.app.state.operations
        states, next_cursor = await ops.customers(signed.principal, space, suspended=True if suspended else None,
                                                  after=cursor, search=q.strip(), limit=50)
        return page(request, "customers.html", signed=signed, space=space, states=states, q=q, suspended=suspended,
                    next_cursor=next_cursor, tz=await ops.zone(space), clocks=both_clocks)

    @app.get("/console/spaces/{space}/customers/{customer}", include_in_schema=False)
    async def customer(request: Request, space: str, customer: str, signed: Signed, done: str = "",
                       error: str = "") -> HTMLResponse:
        ops: Operations = request.app.state.operations
        state = await ops.customer(signed.principal, space, customer)
        history = await ops.history(signed.principal, space, customer)
        return page(request, "customer.html", signed=signed, space=space, state=state,
                    history=list(reversed(history)), done=done, error=error, tz=await ops.zone(space),
                    clocks=both_clocks)

    async def act(request: Request, space: str, customer: str, signed: Session, action: Action, csrf: str,
                  note: str, missed: MissedInvoices | None, at: str) -> Response:
        _checked_form(signed, csrf)
        ops: Operations = request.app.state.operations
        await ops.customer(signed.principal, space, customer)  # 404 before anything else
        target = f"/console/spaces/{quote(space)}/customers/{quote(customer)}"
        try:
            acted = await ops.act(signed.principal, space, customer, action, note=note.strip() or None,
                                  missed=missed, at=at.strip() or None, source=Source.OPERATOR_API, wait=True)
        except (MomentError, ValidationError) as error:
            message = str(error) if isinstance(error, MomentError) else describe_invalid(error)
            return RedirectResponse(f"{target}?error={quote(message)}", status_code=303)
        done = f"{action.value}:{acted.outcome or 'pending'}"
        return RedirectResponse(f"{target}?done={quote(done)}", status_code=303)

    @app.post("/console/spaces/{space}/customers/{customer}/suspend", include_in_schema=False)
    async def suspend(request: Request, space: str, customer: str, signed: Signed, csrf: Annotated[str, Form()],
                      confirm: Annotated[str, Form()], note: Annotated[str, Form()] = "",
                      at: Annotated[str, Form()] = "") -> Response:
        return await act(request, space, customer, signed, Action.SUSPEND, csrf, note, None, at)

    @app.post("/console/spaces/{space}/customers/{customer}/lift", include_in_schema=False)
    async def lift(request: Request, space: str, customer: str, signed: Signed, csrf: Annotated[str, Form()],
                   confirm: Annotated[str, Form()], missed_invoices: Annotated[MissedInvoices, Form()],
                   note: Annotated[str, Form()] = "", at: Annotated[str, Form()] = "") -> Response:
        return await act(request, space, customer, signed, Action.LIFT, csrf, note, missed_invoices, at)

    @app.get("/console/spaces/{space}/bulk", include_in_schema=False)
    async def bulk_form(request: Request, space: str, signed: Signed) -> HTMLResponse:
        Operations.visible(signed.principal, space)
        return page(request, "bulk.html", signed=signed, space=space, job=None)

    @app.post("/console/spaces/{space}/bulk", include_in_schema=False)
    async def bulk_upload(request: Request, space: str, signed: Signed, csrf: Annotated[str, Form()],
                          file: UploadFile, action: Annotated[str, Form()] = "suspend",
                          missed_invoices: Annotated[MissedInvoices, Form()] = MissedInvoices.BILL) -> Response:
        _checked_form(signed, csrf)
        ops: Operations = request.app.state.operations
        chosen = Action.LIFT if action == "lift" else Action.SUSPEND
        text = (await file.read()).decode("utf-8", errors="replace")
        bulk_id = await ops.start_bulk(signed.principal, space, chosen, text,
                                       missed_invoices if chosen is Action.LIFT else None)
        return RedirectResponse(f"/console/spaces/{quote(space)}/bulk/{bulk_id}", status_code=303)

    @app.get("/console/spaces/{space}/bulk/{bulk_id}", include_in_schema=False)
    async def bulk_job(request: Request, space: str, bulk_id: str, signed: Signed) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        job = await ops.bulk(signed.principal, space, bulk_id)
        return page(request, "bulk.html", signed=signed, space=space, job=job)

    @app.get("/console/spaces/{space}/bulk/{bulk_id}/progress", include_in_schema=False)
    async def bulk_progress(request: Request, space: str, bulk_id: str, signed: Signed) -> JSONResponse:
        ops: Operations = request.app.state.operations
        job = await ops.bulk(signed.principal, space, bulk_id)
        return JSONResponse({key: job[key] for key in ("status", "lines", "published", "summary")})

    @app.get("/console/spaces/{space}/invoices", include_in_schema=False)
    async def invoices(request: Request, space: str, signed: Signed) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        return page(request, "invoices.html", signed=signed, space=space,
                    dropped=await ops.dropped(signed.principal, space))

    @app.get("/console/lag", include_in_schema=False)
    async def lag(request: Request, signed: Signed) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        return page(request, "lag.html", signed=signed, space=None, reports=await ops.lag(signed.principal))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(error)}, status_code=403)
        return page(request, "not_found.html", status=403, message=str(error))
