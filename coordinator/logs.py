"""Logging of the coordinator process: plain text (default) or one JSON object a line.

Every record logged while a request is served carries that request's id
(``request_id``, the ``X-Request-ID`` the client sees); JSON lines are written by
python-json-logger.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from coordinator.api import request_id

__all__ = ["LogFormat", "RequestIdFilter", "configure_logging", "json_formatter"]

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged inside a request (JSON: a member)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.current()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        # uvicorn's copy of the message with terminal colour codes
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def configure_logging(
    log_format: LogFormat, level: str = "info", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger (uvicorn's included, when it is started with ``log_config=None``)
    to one handler on the root logger; returns that handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
