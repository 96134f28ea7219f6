"""The failures ``fedrec simulate`` / ``fedrec demo`` expect, as one-line messages.

A user who points the simulation at an unreachable coordinator, a file that is not
interaction data, or a learning rate that makes training diverge should read what to
fix, not a traceback. :func:`describe_failure` turns each expected failure into one
line; anything it does not recognise is a bug and keeps its traceback. The command
line shows tracebacks of expected failures too with ``--debug``.
"""

from __future__ import annotations

import csv

from participant_sdk import APIConnectionError, APIStatusError, APITimeoutError, WaitTimeoutError
from participant_sdk.recsys import TrainingDivergedError

__all__ = ["SimulationError", "describe_failure"]


class SimulationError(Exception):
    """The simulation cannot go on; the message says why and what to change."""


def _request(exc: APIConnectionError | APIStatusError) -> str:
    request = exc.request
    return f"{request.method} {request.url}"


def describe_failure(exc: BaseException) -> str | None:
    """One line telling the user what went wrong, or None for an unexpected error."""
    if isinstance(exc, SimulationError | TrainingDivergedError):
        return str(exc)
    if isinstance(exc, APITimeoutError):
        return f"the coordinator did not answer in time ({_request(exc)}); is it overloaded?"
    if isinstance(exc, APIConnectionError):
        return (
            f"cannot reach the coordinator ({_request(exc)}): {exc.message.rstrip('.')}. "
            "Is it running, and is the URL right?"
        )
    if isinstance(exc, APIStatusError):
        title = exc.problem.get("title") or exc.response.reason_phrase
        detail = exc.detail or exc.message
        if exc.status_code >= 500:
            return (
                f"the coordinator failed on {_request(exc)} ({exc.status_code} {title}): "
                f"{detail}; see the coordinator's log"
            )
        return f"the coordinator refused {_request(exc)} ({exc.status_code} {title}): {detail}"
    if isinstance(exc, WaitTimeoutError):
        return f"gave up waiting for the coordinator: {exc}"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"cannot read {exc.filename}: {exc.strerror}"
    if isinstance(exc, UnicodeDecodeError | csv.Error):
        return f"the data file is not readable text/CSV: {exc}"
    return None
