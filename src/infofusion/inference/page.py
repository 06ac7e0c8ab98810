"""The service's own pages: the conversation page at ``/`` and Swagger UI / ReDoc at ``/docs`` and
``/redoc`` served from local files, so both work with no network (no CDN).

The Swagger UI and ReDoc files come from the ``fastapi-offline`` package (the ``serve`` extra), which
ships them; the conversation page is ``static/page.html`` of this package and talks to the sessions API.
"""

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS_URL = "/docs-assets"


def docs_assets_directory() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def conversation_page() -> str:
    return (resources.files("infofusion.inference") / "static" / "page.html").read_text(encoding="utf-8")


def add_pages(app: FastAPI) -> None:
    """``/`` (the conversation page), ``/docs`` and ``/redoc``; the app is built with both docs off."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=docs_assets_directory()), name="docs-assets")
    page = conversation_page()
    title = f"{app.title} {app.version}"

    @app.get("/", include_in_schema=False)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{title}: API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{title}: API",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
