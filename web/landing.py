"""GET /: a small page linking the demo, the dashboard and the API docs; and the headers every page gets.

Every HTML answer (this page, /demo/realtime, /dashboard, /docs) carries:
- `Content-Security-Policy`: scripts, styles, images and connections from this origin only (the pages
  load their libraries from node_modules through this server, and open Socket.IO on it), no plugins,
  and no framing: no inline script or style attribute (scripts set styles through the DOM, which the
  policy allows). A page needing more may set its own policy, which is then kept;
- `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`;
- `X-Content-Type-Options: nosniff`, which every answer other than JSON gets too (scripts and
  stylesheets among them), so a browser never runs a file as another type than the one it was sent as.
"""
from __future__ import annotations

from flask import Blueprint, Response, send_from_directory

from config.settings import PROJECT_ROOT

bp = Blueprint("landing", __name__)

LANDING_DIR = PROJECT_ROOT / "static" / "landing"
# The pages the landing page links, also named in the start-up log (web/server.py).
PAGES = (("demo", "/demo/realtime"), ("dashboard", "/dashboard"), ("API docs", "/docs"))
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",  # Socket.IO: polling and the WebSocket (ws: on this host and port)
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))


@bp.get("/")
def landing_page() -> Response:
    return send_from_directory(LANDING_DIR, "index.html")


@bp.get("/static/landing/<path:filename>")
def landing_asset(filename: str) -> Response:
    """The page's stylesheet; an unknown or escaping path is a JSON 404."""
    return send_from_directory(LANDING_DIR, filename)


@bp.after_app_request
def _page_headers(response: Response) -> Response:
    mimetype = response.mimetype
    if mimetype == "application/json":  # the API's answers: the common case, left alone
        return response
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Frame-Options", "DENY")
    return response
