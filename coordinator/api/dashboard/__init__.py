"""The dashboard: server-rendered pages at ``/`` for people watching federations.

``install_dashboard(app)`` adds the pages and mounts their static files (CSS only: the
metric curves are inline SVG drawn on the server, so no script or CDN is involved).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from coordinator.api.dashboard.pages import router

__all__ = ["STATIC_PATH", "install_dashboard"]

STATIC_PATH = "/dashboard-static"


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard pages and their stylesheet."""
    app.include_router(router)
    app.mount(
        STATIC_PATH,
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="dashboard-static",
    )
