"""The browser demo of real-time recommendations (GET /demo/realtime) and the files it loads.

The page's own HTML, CSS and JS live in static/demo/. The Socket.IO browser client is not in
the repository: `npm install` at the project root fetches the `socket.io-client` package and the
app serves its bundled build straight from node_modules, so the page works without internet.
"""
from __future__ import annotations

from flask import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound

from config.settings import PROJECT_ROOT

bp = Blueprint("demo", __name__)

DEMO_DIR = PROJECT_ROOT / "static" / "demo"
VENDOR_DIR = PROJECT_ROOT / "node_modules" / "socket.io-client" / "dist"
SOCKET_IO_CLIENT = "socket.io.min.js"


@bp.get("/demo/realtime")
def realtime_page() -> Response:
    return send_from_directory(DEMO_DIR, "realtime.html")


@bp.get("/static/demo/<path:filename>")
def demo_asset(filename: str) -> Response:
    """The page's stylesheet and script; an unknown or escaping path is a JSON 404."""
    return send_from_directory(DEMO_DIR, filename)


@bp.get(f"/static/vendor/{SOCKET_IO_CLIENT}")
def socket_io_client() -> Response:
    if not (VENDOR_DIR / SOCKET_IO_CLIENT).is_file():
        raise NotFound("run npm install to fetch the Socket.IO client")
    return send_from_directory(VENDOR_DIR, SOCKET_IO_CLIENT)
