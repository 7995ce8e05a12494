"""A short way through the ASGI stack for well-formed POST /v1/recommend requests.

FastAPI's own handling of one request (routing, dependency solving, its body reading and validation
machinery) costs more CPU than the index search it leads to. This middleware takes the requests that
need none of it: the path and method match, reads are open (no key to check), the body is JSON by
Content-Type, json.loads reads it, and RecommendRequest accepts it. It validates them exactly as
FastAPI would (json.loads, then the model's validate_python with from_attributes, as FastAPI's body
field does) and answers them with the very endpoint function the route uses, so answers, error
statuses and messages are the route's. Everything else (a wrong content type, JSON that does not parse
or validate, a key to check, other paths) goes on to FastAPI with its body replayed, so FastAPI's
error responses stay exactly what they were.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.requests import Request

from recindex.serve.schemas import RecommendRequest

PATH = "/v1/recommend"


class RecommendFastPath:
    def __init__(
        self, app, endpoint: Callable[[RecommendRequest], Awaitable], owner, enabled: Callable[[], bool]
    ):
        """`endpoint`: the route's own function; `owner`: the FastAPI app (its exception handlers and
        route); `enabled()`: whether reads need no key (else every request goes the long way)."""
        self.app, self.endpoint, self.owner, self.enabled = app, endpoint, owner, enabled
        self._route = None

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or not self.enabled()
        ):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(b"", receive, message), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = _parsed(scope, body)
        if request is None:  # FastAPI answers it, as it always did
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self._recommend_route()  # for the latency histogram's label
        try:
            response = await self.endpoint(request)
        except Exception as error:
            handler = self._handler(error)
            if handler is None:
                raise  # a server error, as on the route
            response = await handler(Request(scope), error)
        await response(scope, receive, send)

    def _handler(self, error: Exception):
        for kind in type(error).__mro__:
            handler = self.owner.exception_handlers.get(kind)
            if handler is not None:
                return handler
        return None

    def _recommend_route(self):
        if self._route is None:
            self._route = next(r for r in self.owner.routes if getattr(r, "path", None) == PATH)
        return self._route


def _parsed(scope, body: bytes) -> RecommendRequest | None:
    """The request body as the route would see it, or None where the route must see it itself."""
    if not body or _content_type(scope) != b"application/json":
        return None
    try:
        return RecommendRequest.model_validate(json.loads(body), from_attributes=True)
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _content_type(scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value
    return None


def _replay(body: bytes, receive, first: dict | None = None):
    """A receive() that gives the body read already, then hands on to the connection's."""
    pending = [first or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed
