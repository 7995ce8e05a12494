"""What every request passes through: a bound on the body size, and the latency histogram.

Written as plain ASGI rather than with `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs
each request through an extra task and memory streams, which cost more than a whole answer from an
HNSW index does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException


class BodyTooLarge(HTTPException):
    """An HTTPException, so that the app's body reader passes it on as a 413 rather than a parse error."""

    def __init__(self, limit: int):
        super().__init__(413, f"body over {limit} bytes")


class LimitAndMeasure:
    def __init__(self, app, max_body_bytes: int, observe: Callable[[str, int, float], None]):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.observe = observe  # (route template, status code, seconds)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        declared = dict(scope["headers"]).get(b"content-length")
        limit = self.max_body_bytes
        received = 0

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_within_limit():
            # A body without a (truthful) length is counted as it arrives.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise BodyTooLarge(limit)
            await self.app(scope, receive_within_limit, send_and_note)
        except BodyTooLarge:
            status = 413
            await _send_json(send, 413, {"detail": f"body over {limit} bytes"})
        finally:
            route = scope.get("route")
            self.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
