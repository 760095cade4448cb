"""The browser client's files (SPEC §15.7): `/` is its page, `/web/<name>` its modules and CSS.

The files ship inside the package (`hearthmesh.node.web`), plain JS modules and CSS with no
build step; they are read once at start. Each is served with a Content-Security-Policy that
lets the page load only its own files and talk only to its own origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

from hearthmesh.protocol.errors import NotFound

__all__ = ["FILES_KEY", "SERVICE_WORKER", "WEB_ROUTES", "is_web_path", "load_web_files"]

_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SERVICE_WORKER: Final = "sw.js"
_SERVICE_WORKER: Final = {"Service-Worker-Allowed": "/"}
"""It lives under /web/ but serves the whole page (Web Push, SPEC §15.7.9): the scope is `/`."""

WebFiles = dict[str, tuple[bytes, str]]
FILES_KEY: Final = web.AppKey("web_files", WebFiles)


def load_web_files() -> WebFiles:
    """name -> (content, content type) of every servable file in the package's web folder."""
    files: WebFiles = {}
    for entry in resources.files("hearthmesh.node.web").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


def is_web_path(path: str) -> bool:
    """A request for the client's files, which need no credential (the page then pairs)."""
    return path == "/" or path.startswith("/web/")


def _file(request: web.Request, name: str) -> web.Response:
    found = request.app[FILES_KEY].get(name)
    if found is None:
        raise NotFound(f"no file {name!r}")
    content, content_type = found
    headers = _HEADERS | _SERVICE_WORKER if name == SERVICE_WORKER else _HEADERS
    return web.Response(body=content, content_type=content_type, charset="utf-8", headers=headers)


async def index(request: web.Request) -> web.Response:
    return _file(request, "index.html")


async def asset(request: web.Request) -> web.Response:
    return _file(request, request.match_info["name"])


WEB_ROUTES: Final = (("GET", "/", index), ("GET", "/web/{name}", asset))
