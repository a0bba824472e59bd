"""API routes for scripted use, added to the WebUI's FastAPI app (``on_app_started``):

- ``POST /sd-optim/run``  body ``{"config": <file path | YAML text | mapping>, "trials": N,
  "resume": "<study>", "fork": "<study>", "join": true}`` -> 200 and the status (``join``: a worker
  of the shared study the config's ``optimizer.storage`` and ``optimizer.study`` name); 400 with
  ``problems`` for a bad config; 409 with the live run's ``status`` while one is running;
- ``GET /sd-optim/status`` -> the status (``state``: idle | running | finished | failed);
- ``POST /sd-optim/stop`` -> asks the live run to stop at the next image boundary; the status.

Every route takes the WebUI's API protection (:class:`ApiAccess`): with ``--api-auth`` HTTP
Basic credentials, as the WebUI's own ``/sdapi`` routes do; with only ``--gradio-auth``, the login
cookie of a user logged in to the WebUI. A config sent to ``/run`` may only name files in the
allowed folders (README.md, "Security").

No pydantic models (A1111 ships pydantic 1, Forge pydantic 2): bodies are read as plain JSON.
"""

# no ``from __future__ import annotations``: FastAPI reads the route functions' annotations
import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .runs import RunBusy, RunManager

PREFIX = "/sd-optim"


@dataclass
class ApiAccess:
    """Who may call the routes and which folders a config they send may name."""

    credentials: dict = field(default_factory=dict)  # user -> password (--api-auth); empty: none
    login: bool = False  # --gradio-auth: without API credentials, a logged-in WebUI user only
    folders: Callable[[], list] = list  # the allowed folders, read at each request (settings change)


def parse_api_auth(text: str) -> dict:
    """``--api-auth user:pw,user2:pw2`` as {user: password} (the WebUI's format)."""
    out = {}
    for item in (text or "").split(","):
        user, sep, password = item.partition(":")
        if sep and user.strip():
            out[user.strip()] = password
    return out


def gradio_user(app, request) -> str | None:
    """The user logged in to the WebUI (gradio's login) who sent ``request``, if any: the cookie
    gradio set at login (3.x ``access-token``; 4.x ``access-token-<cookie_id>``, and the
    ``-unsecure`` ones for plain http), looked up in ``app.tokens``."""
    dependency = getattr(app, "auth_dependency", None)
    if dependency is not None:
        return dependency(request)
    cookie_id = getattr(app, "cookie_id", None)
    names = ((f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}") if cookie_id
             else ("access-token", "access-token-unsecure"))
    tokens = getattr(app, "tokens", None) or {}
    for name in names:
        token = request.cookies.get(name)
        if token and token in tokens:
            return tokens[token]
    return None


def _guard(app, access: ApiAccess):
    """The FastAPI dependency every route takes; None when the WebUI itself is unprotected."""
    from fastapi import Depends, HTTPException, Request
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    if access.credentials:
        basic = HTTPBasic()

        def check_credentials(credentials: HTTPBasicCredentials = Depends(basic)):  # noqa: B008 - FastAPI idiom
            expected = access.credentials.get(credentials.username)
            if expected is None or not secrets.compare_digest(credentials.password.encode(), expected.encode()):
                raise HTTPException(status_code=401, detail="Incorrect username or password",
                                    headers={"WWW-Authenticate": "Basic"})
            return True

        return check_credentials
    if access.login:
        def check_login(request: Request):
            if gradio_user(app, request) is None:
                raise HTTPException(status_code=401, detail=(
                    "the WebUI requires a login (--gradio-auth): log in to the WebUI first and send its "
                    "cookie, or start the WebUI with --api-auth to use credentials"))
            return True

        return check_login
    return None


def _jsonable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if isinstance(v, (str, int, float, bool, list, type(None)))}


def add_routes(app, manager: Callable[[], RunManager], access: ApiAccess) -> None:
    from fastapi import Depends, Request
    from fastapi.responses import JSONResponse

    async def run(request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "config" not in body:
            return JSONResponse({"error": "the body must be a JSON object with a 'config' field "
                                          "(a config file path, YAML text, or a mapping)"}, 400)
        trials = body.get("trials")
        if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
            return JSONResponse({"error": f"trials: must be a whole number >= 1, got {trials!r}"}, 400)
        kwargs = {"trials": trials, "resume": str(body.get("resume") or ""),
                  "fork": str(body.get("fork") or ""), "join": body.get("join") is True}
        try:
            # start() returns once the run is past its checks: not on the event loop
            status = await asyncio.get_running_loop().run_in_executor(
                None, lambda: manager().start(body["config"], allowed=list(access.folders()), **kwargs))
        except RunBusy as e:
            return JSONResponse({"error": str(e), "status": _jsonable(e.status)}, 409)
        except ConfigError as e:
            return JSONResponse({"error": str(e), "problems": [p.as_dict() for p in e.problems]}, 400)
        return JSONResponse(_jsonable(status))

    async def status():
        return JSONResponse(_jsonable(manager().status()))

    async def stop():
        return JSONResponse(_jsonable(manager().stop("stopped through the API")))

    async def pause():
        return JSONResponse(_jsonable(manager().pause()))

    async def resume():
        return JSONResponse(_jsonable(manager().resume()))

    guard = _guard(app, access)
    deps = {"dependencies": [Depends(guard)]} if guard is not None else {}
    app.add_api_route(f"{PREFIX}/run", run, methods=["POST"], **deps)
    app.add_api_route(f"{PREFIX}/pause", pause, methods=["POST"], **deps)
    app.add_api_route(f"{PREFIX}/resume", resume, methods=["POST"], **deps)
    app.add_api_route(f"{PREFIX}/status", status, methods=["GET"], **deps)
    app.add_api_route(f"{PREFIX}/stop", stop, methods=["POST"], **deps)
