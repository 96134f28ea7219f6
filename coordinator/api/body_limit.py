"""The request body's size limit (``FEDREC_MAX_UPLOAD_BYTES``): 413 for a larger body,
declared or chunked, before it is buffered. Run by the front door (api/front_door.py)
once the caller is admitted."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.problems import problem_response

__all__ = ["BodyLimit"]


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def pass_on(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Call ``app`` with a body of at most ``max_bytes``, or answer 413."""
        declared = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = value
        if chunked is None and (declared is None or declared == b"0"):
            # no body (a poll, a download): nothing to count, no wrappers to pay for
            await app(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            None,
            status=413,
            slug="payload-too-large",
            title="Payload too large",
            detail=f"request bodies are limited to {self.max_bytes} bytes "
            "(FEDREC_MAX_UPLOAD_BYTES)",
            instance=scope.get("path"),
        )
        await response(scope, receive, send)
