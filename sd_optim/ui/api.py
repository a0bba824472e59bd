"""API routes for scripted use, added to the WebUI's FastAPI app (``on_app_started``):

- ``POST /sd-optim/run``  body ``{"config": <file path | YAML text | mapping>, "trials": N,
  "resume": "<study>", "fork": "<study>"}`` -> 200 and the status; 400 with ``problems`` for a bad
  config; 409 with the live run's ``status`` while one is running;
- ``GET /sd-optim/status`` -> the status (``state``: idle | running | finished | failed);
- ``POST /sd-optim/stop`` -> asks the live run to stop at the next image boundary; the status.

No pydantic models (A1111 ships pydantic 1, Forge pydantic 2): bodies are read as plain JSON.
"""

# no ``from __future__ import annotations``: FastAPI reads the route functions' annotations
import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .runs import RunBusy, RunManager

PREFIX = "/sd-optim"


def _jsonable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if isinstance(v, (str, int, float, bool, list, type(None)))}


def add_routes(app, manager: Callable[[], RunManager]) -> None:
    from fastapi import Request
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
                  "fork": str(body.get("fork") or "")}
        try:
            # start() returns once the run is past its checks: not on the event loop
            status = await asyncio.get_running_loop().run_in_executor(
                None, lambda: manager().start(body["config"], **kwargs))
        except RunBusy as e:
            return JSONResponse({"error": str(e), "status": _jsonable(e.status)}, 409)
        except ConfigError as e:
            return JSONResponse({"error": str(e), "problems": e.problems}, 400)
        return JSONResponse(_jsonable(status))

    async def status():
        return JSONResponse(_jsonable(manager().status()))

    async def stop():
        return JSONResponse(_jsonable(manager().stop("stopped through the API")))

    async def pause():
        return JSONResponse(_jsonable(manager().pause()))

    async def resume():
        return JSONResponse(_jsonable(manager().resume()))

    app.add_api_route(f"{PREFIX}/run", run, methods=["POST"])
    app.add_api_route(f"{PREFIX}/pause", pause, methods=["POST"])
    app.add_api_route(f"{PREFIX}/resume", resume, methods=["POST"])
    app.add_api_route(f"{PREFIX}/status", status, methods=["GET"])
    app.add_api_route(f"{PREFIX}/stop", stop, methods=["POST"])
