"""Production HTTP server: gevent's WSGI server, never Werkzeug's development server.

gevent serves many keep-alive and WebSocket connections from one process with cheap greenlets,
and it is the async mode Flask-SocketIO recommends. The caller must have run
`gevent.monkey.patch_all()` before importing the app (main.py's `serve` does).
"""
from __future__ import annotations

import json
import os
import signal
import socket

import gevent
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from web.context import SETTINGS_KEY
from web.landing import PAGES

BACKLOG = 1024  # room for bursts of new connections while the process is busy


class HeaderTimeout(ValueError):
    """The request line and headers took longer than the header timeout (a ValueError: pywsgi treats it
    as the client's fault and logs no traceback)."""


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"error": "request_timeout",
                       "message": f"the request line and headers took longer than {seconds:g} s"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class RequestHeaders:
    """A request's header fields, read with the interface pywsgi expects of its MessageClass.

    pywsgi's default parses them with http.client.parse_headers, which runs the email package's
    feed parser: 11% of the server's CPU under write load (py-spy, bench/README.md). This reads the
    lines directly, with the same limits (65,536 bytes a line, 100 fields); a malformed or folded
    line is a 400, as RFC 9112 allows.
    """

    MAX_LINE, MAX_FIELDS = 65536, 100

    def __init__(self, rfile, *_) -> None:
        self.status = ""
        self._fields: list[tuple[str, str, str]] = []  # (lower-case name, name, value), in order
        while True:
            line = rfile.readline(self.MAX_LINE + 1)
            if len(line) > self.MAX_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name[0] in " \t" or name != name.rstrip():
                self.status = "Invalid header line"
                return
            if len(self._fields) == self.MAX_FIELDS:
                self.status = "Too many headers"
                return
            self._fields.append((name.lower(), name, value.strip()))

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((value for lower, _, value in self._fields if lower == name), default)

    getheader = get

    def __delitem__(self, name: str) -> None:
        name = name.lower()
        self._fields = [field for field in self._fields if field[0] != name]

    @property
    def headers(self):
        """Each field as a raw line, which pywsgi's get_environ reads."""
        return (f"{name}: {value}\r\n" for _, name, value in self._fields)

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")


class RequestHandler(WebSocketHandler):
    """WebSocket-capable handler that is fair between connections, bounds how long a connection may
    hold the server without sending a request, and logs only when asked.

    - pywsgi serves a keep-alive connection's requests in a loop without yielding: under load one
      busy connection held the loop for 100-350 ms, stalling every other request and push. Yielding
      after each request cut p99 under 32-connection load from ~340 ms to 8-30 ms (bench/README.md).
    - Timeouts (without them, sockets that never finish a request hold a file descriptor each forever):
      every read or write of the connection waits at most HTTP_IDLE_TIMEOUT_SECONDS (a socket
      timeout), so a connection that sends nothing, or stops between requests or inside a body, is
      closed; and from a request's first byte, its line and headers must arrive within
      HTTP_HEADER_TIMEOUT_SECONDS (a gevent timer; a client dripping one byte at a time would satisfy the
      socket timeout forever), or it gets 408 and is closed. A WebSocket drops the socket timeout once
      upgraded: it is quiet between messages, and Engine.IO's ping/pong closes it if the peer is gone.
    - geventwebsocket sends access lines to a logger that prints only in its debug mode, so the
      server's `log` gets them as in pywsgi; with logging off no line is formatted at all.
    """

    MessageClass = RequestHeaders
    _header_timer: gevent.Timeout | None = None

    def __init__(self, sock, address, server, rfile=None):
        idle_timeout = getattr(server, "idle_timeout", None)
        if idle_timeout:
            sock.settimeout(idle_timeout)
        super().__init__(sock, address, server, rfile)

    def read_requestline(self):
        try:
            buffered = self.rfile.peek(1)  # waits for the first byte, at most the idle timeout
        except OSError:  # idle timeout (socket.timeout), or the connection was reset
            return ""
        if not buffered:
            return ""  # the client closed the connection
        header_timeout = getattr(self.server, "header_timeout", None)
        if header_timeout and b"\r\n\r\n" not in buffered:  # usually the whole head came in one packet
            self._header_timer = gevent.Timeout.start_new(header_timeout, HeaderTimeout())
        try:
            return super().read_requestline()
        except HeaderTimeout:
            self._cancel_header_timer()
            try:
                self.socket.sendall(_timeout_answer(header_timeout))
            except OSError:
                pass
            return ""  # pywsgi closes a connection without a request line

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)  # a HeaderTimeout goes to _handle_client_error
        finally:
            self._cancel_header_timer()

    def _handle_client_error(self, ex):
        if isinstance(ex, HeaderTimeout):
            return "408", _timeout_answer(self.server.header_timeout)
        return super()._handle_client_error(ex)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.close()
            self._header_timer = None

    def run_websocket(self):
        self.socket.settimeout(None)
        return super().run_websocket()

    def handle_one_request(self):
        try:
            result = super().handle_one_request()
        finally:
            self._cancel_header_timer()  # also when the request line alone was refused (414)
        gevent.sleep(0)  # let the other connections' greenlets run before this one reads again
        return result

    def log_request(self) -> None:
        if not isinstance(self.server.log, pywsgi._NoopLog):  # log=None becomes a no-op writer
            pywsgi.WSGIHandler.log_request(self)


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY set once for every accepted connection.

    Linux copies TCP_NODELAY from the listener to each accepted socket. Without it a keep-alive
    client waits ~44 ms per response for the delayed ACK (Nagle), which dwarfs a cached answer.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


def run_server(app, host: str, port: int) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT, then stop accepting and return.

    Per-request access logs are off by default (they cost time and flood the terminal the shell
    shares); set LOG_REQUESTS=1 to turn them on. Errors are still logged to stderr.
    """
    listener = listening_socket(host, port)
    access_log = "default" if os.environ.get("LOG_REQUESTS") == "1" else None
    server = pywsgi.WSGIServer(listener, app, log=access_log, handler_class=RequestHandler)
    settings = app.extensions[SETTINGS_KEY]
    server.idle_timeout = settings.http_idle_timeout_seconds if settings.http_idle_timeout_seconds > 0 else None
    server.header_timeout = settings.http_header_timeout_seconds if settings.http_header_timeout_seconds > 0 else None
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)

    bound_host, bound_port = listener.getsockname()[:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    print(f"Serving on http://{bound_host}:{bound_port}", flush=True)
    browsable = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(bound_host, bound_host)  # a wildcard is no address
    for name, path in PAGES:
        print(f"  {name + ':':<11}http://{browsable}:{bound_port}{path}", flush=True)
    server.serve_forever()
    print("Server stopped", flush=True)
