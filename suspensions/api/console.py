"""The console: server-rendered pages over the same service functions as the API.

Signed in with a token, kept by a session cookie (HttpOnly, SameSite=Strict, Secure and ``__Host-``
unless served plainly on loopback: ``browser.py``) that ends after its absolute lifetime or when idle;
every form that changes something carries the session's form token, checked here (in constant time),
against cross-site requests. Pages escape everything they show (Jinja2 autoescape), and show only
messages of their own (``NOTICES``, ``PROBLEMS``), picked by a code in the URL, never text from it.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.formparsers import MultiPartException

from models import Action, MissedInvoices, Source
from models.moments import MomentError, shown
from suspensions import access, operators, people
from suspensions.access import Principal, Role
from suspensions.api.browser import clear_session_cookie, from_this_site, session_cookie, set_session_cookie
from suspensions.api.edge import BodyTooLarge, check_bulk_lines
from suspensions.api.service import Forbidden, NotFound, Operations
from suspensions.api.throttle import AuthThrottle, Throttled
from suspensions.api.uploads import UploadRefused, read_bulk_upload

HERE = Path(__file__).parent
CUSTOMERS_PER_PAGE = 50
BULK_ACTIONS = {"suspend": Action.SUSPEND, "lift": Action.LIFT}
# What a customer page may say after an action: picked by the code in ?done= / ?error=, never read from
# the URL (a link could otherwise make the console say anything). An unknown code shows nothing.
NOTICES = {f"{action}:{outcome}": f"Applied: {action} → {outcome}. The state below is the new one."
           for action in BULK_ACTIONS for outcome in operators.RECORDED_OUTCOMES} | {
    f"{action}:pending": f"Sent: {action}, not applied yet; reload the page in a moment." for action in BULK_ACTIONS}
PROBLEMS = {
    "when": "Not sent: that moment cannot be used. Give a moment in the future, in ISO 8601 (2026-12-01, "
            "2026-12-01T09:00, or with an offset); a date or time without an offset is read in the space's "
            "time zone.",
    "note": "Not sent: a note has at most 2000 characters and no control characters other than tab and "
            "line breaks.",
    "invalid": "Not sent: a value of the form is not valid.",
}
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


class SignInRequired(Exception):
    def __init__(self, stale: bool = False) -> None:
        super().__init__()
        self.stale = stale  # a cookie was sent but names no live session: the answer clears it


class Session:
    def __init__(self, principal: Principal, csrf: str, cookie: str) -> None:
        self.principal, self.csrf, self.cookie = principal, csrf, cookie


async def session(request: Request) -> Session:
    ops: Operations = request.app.state.operations
    cookie = session_cookie(request)
    if cookie:
        throttle: AuthThrottle = request.app.state.throttle
        with throttle.attempt(request) as attempt:
            found = await ops.session(cookie)
            if found is not None:
                attempt.succeeded()
                return Session(found[0], found[1], cookie)
            request.app.state.metrics.auth_failures.labels(reason="session").inc()
            attempt.failed("unknown, expired or idle session", None)
        raise SignInRequired(stale=True)
    raise SignInRequired()


Signed = Annotated[Session, Depends(session)]


def page(request: Request, template: str, status: int = 200, signed: Session | None = None,
         **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        request=request, principal=signed.principal if signed else None, csrf=signed.csrf if signed else "",
        spaces=sorted(signed.principal.spaces) if signed else [], Role=Role, shown=shown, **context)
    return HTMLResponse(html, status_code=status)


def _checked_form(signed: Session, csrf: str) -> None:
    if not hmac.compare_digest(csrf.encode(), signed.csrf.encode()):
        raise Forbidden(Role.VIEWER)  # a form not from our page: refused like a role that may not act


def register_console(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, required: SignInRequired) -> Response:
        response = RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
        if required.stale:  # the browser stops sending it (a polling page would count a failure each time)
            clear_session_cookie(response, request)
        return response

    @app.get("/", include_in_schema=False)
    async def home(signed: Signed) -> RedirectResponse:
        return RedirectResponse(f"/console/spaces/{quote(sorted(signed.principal.spaces)[0])}", status_code=303)

    @app.get("/signin", include_in_schema=False)
    async def signin_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002
        return page(request, "signin.html", next=next if next.startswith("/") else "/")

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
        if not from_this_site(request):  # another site's form: nothing looked up, nothing created
            return page(request, "signin.html", status=403, next="/", error="Sign in from this console's own page.")
        ops: Operations = request.app.state.operations
        throttle: AuthThrottle = request.app.state.throttle
        try:
            attempt = throttle.attempt(request)
        except Throttled as refused:
            answer = page(request, "signin.html", status=429, next=next,
                          error="Too many failed sign-ins from this address; try again in a minute.")
            answer.headers.update(refused.headers or {})
            return answer
        with attempt:
            principal = await ops.principal_for_token(token.strip())
            if principal is None:
                request.app.state.metrics.auth_failures.labels(reason="unknown or revoked").inc()
                attempt.failed("sign-in with an unknown or revoked token", token.strip())
                return page(request, "signin.html", status=401, next=next, error="Unknown or revoked token.")
            attempt.succeeded()
            cookie = await ops.open_session(principal)
        # Only a path of this site: "//host" and "/\\host" are other sites to a browser.
        response = RedirectResponse(next if next.startswith("/") and not next.startswith(("//", "/\\")) else "/",
                                    status_code=303)
        set_session_cookie(response, request, cookie, int(access.SESSION_LIFETIME.total_seconds()))
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request, signed: Signed, csrf: Annotated[str, Form()]) -> RedirectResponse:
        _checked_form(signed, csrf)
        ops: Operations = request.app.state.operations
        await ops.close_session(signed.cookie)
        response = RedirectResponse("/signin", status_code=303)
        clear_session_cookie(response, request)
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, _: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "not found"}, status_code=404)
        return page(request, "not_found.html", status=404)

    from suspensions.api.overview_routes import register_overview  # it builds on this module's session and page

    register_overview(app)

    @app.get("/console/spaces/{space}/customers", include_in_schema=False)
    async def customers(request: Request, space: str, signed: Signed, q: Annotated[str, Query(max_length=200)] = "",
                        suspended: str = "", reason: Annotated[str, Query(max_length=200)] = "",
                        scheduled: Annotated[str, Query(pattern="^(|suspend|lift)$")] = "", sort: people.Sort = "name",
                        page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        found, more, blocks = await ops.people_list(signed.principal, space, search=q, suspended=True if suspended else None,
                                            reason=reason or None, scheduled=scheduled or None, sort=sort,
                                            offset=(page_number - 1) * CUSTOMERS_PER_PAGE,
                                            limit=CUSTOMERS_PER_PAGE)
        filters = {"q": q, "suspended": suspended, "reason": reason, "scheduled": scheduled, "sort": sort}
        return page(request, "customers.html", signed=signed, space=space, people=found, q=q, suspended=suspended,
                    blocks=blocks,
                    reason=reason, scheduled=scheduled, sort=sort, page_number=page_number, more=more,
                    filters={name: value for name, value in filters.items() if value},
                    unfiltered={name: value for name, value in filters.items()
                                if value and name not in ("reason", "scheduled")}, tz=await ops.zone(space))

    @app.get("/console/spaces/{space}/customers/{customer}", include_in_schema=False)
    async def customer(request: Request, space: str, customer: str, signed: Signed, done: str = "",
                       error: str = "") -> HTMLResponse:
        ops: Operations = request.app.state.operations
        state = await ops.customer(signed.principal, space, customer)
        history = await ops.history(signed.principal, space, customer)
        profile, erasures = await ops.profile(signed.principal, space, customer)
        invoices = await ops.invoices(signed.principal, space, customer)
        return page(request, "customer.html", signed=signed, space=space, state=state, profile=profile,
                    erasures=erasures, invoices=invoices,
                    history=list(reversed(history)), notice=NOTICES.get(done), problem=PROBLEMS.get(error),
                    tz=await ops.zone(space))

    async def act(request: Request, space: str, customer: str, signed: Session, action: Action, csrf: str,
                  note: str, missed: MissedInvoices | None, at: str) -> Response:
        _checked_form(signed, csrf)
        ops: Operations = request.app.state.operations
        await ops.customer(signed.principal, space, customer)  # 404 before anything else
        target = f"/console/spaces/{quote(space)}/customers/{quote(customer)}"
        try:
            acted = await ops.act(signed.principal, space, customer, action, note=note.strip() or None,
                                  missed=missed, at=at.strip() or None, source=Source.OPERATOR_API, wait=True)
        except MomentError:
            return RedirectResponse(f"{target}?error=when", status_code=303)
        except ValidationError as error:
            only_note = all(item["loc"][:1] == ("note",) for item in error.errors())
            return RedirectResponse(f"{target}?error={'note' if only_note else 'invalid'}", status_code=303)
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
    async def bulk_upload(request: Request, space: str, signed: Signed) -> Response:
        """No Form parameters: the upload is read only after the session, space, role and the token's
        running jobs are checked (``uploads.py``), in memory, bounded by the edge."""
        ops: Operations = request.app.state.operations
        await ops.may_start_bulk(signed.principal, space)

        def refused(status: int, message: str) -> HTMLResponse:
            return page(request, "bulk.html", status=status, signed=signed, space=space, job=None, problem=message)

        try:
            upload = await read_bulk_upload(request, ops.settings.api_max_bulk_bytes)
        except (UploadRefused, MultiPartException) as error:
            return refused(422, f"Not started: {error}")
        _checked_form(signed, upload.fields.get("csrf", ""))
        chosen = BULK_ACTIONS.get(upload.fields.get("action", "suspend"))
        if chosen is None:
            return refused(422, "Not started: the action is suspend or lift.")
        try:
            missed = MissedInvoices(upload.fields.get("missed_invoices", MissedInvoices.BILL.value))
        except ValueError:
            return refused(422, "Not started: missed invoices are billed or waived.")
        try:
            check_bulk_lines(upload.text, ops.settings.api_max_bulk_lines)
        except BodyTooLarge as error:
            return refused(413, f"Not started: {error.detail}.")
        bulk_id = await ops.start_bulk(signed.principal, space, chosen, upload.text,
                                       missed if chosen is Action.LIFT else None)
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
        return JSONResponse(job.model_dump(mode="json", include={"status", "lines", "published", "summary"}))

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
