"""Swagger UI and ReDoc served by the coordinator itself, so /docs and /redoc work offline.

FastAPI's default pages load their scripts from a CDN. The assets here come from the
``fastapi-offline`` package (MIT; it ships Swagger UI's and ReDoc's distributions under
their own licences, Apache-2.0 and MIT), served from its installed folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install_offline_docs"]

ASSETS_PATH = "/docs-static"
IMAGES_FROM_HERE_ONLY = "img-src 'self' data:"


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc with local assets; create the app with docs_url=redoc_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(ASSETS_PATH, StaticFiles(directory=_assets_dir()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's sidebar badge loads its logo from a CDN, unconditionally; the browser is
        # told not to (the badge hides itself when the image fails), so no request leaves
        page.headers["Content-Security-Policy"] = IMAGES_FROM_HERE_ONLY
        return page
