"""Logging of ``fedrec serve``: uvicorn's plain text (default) or one JSON object a line.

Every record logged while a request is served carries that request's id
(``request_id``, the ``X-Request-ID`` the client sees); JSON lines are written by
python-json-logger. The configuration is a ``logging.config`` dict handed to uvicorn,
which applies it in every worker process.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from coordinator.api import request_id

__all__ = ["LogFormat", "RequestIdFilter", "json_formatter", "log_config"]

LogFormat = Literal["text", "json"]


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


def log_config(log_format: LogFormat, level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config``: its own for text; for JSON, every logger (uvicorn's
    included) through one JSON handler on the root logger."""
    if log_format == "text":
        from uvicorn.config import LOGGING_CONFIG

        return copy.deepcopy(LOGGING_CONFIG)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
