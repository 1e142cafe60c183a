"""Production HTTP server: gevent's WSGI server, never Werkzeug's development server.

gevent serves many keep-alive and WebSocket connections from one process with cheap greenlets,
and it is the async mode Flask-SocketIO recommends. The caller must have run
`gevent.monkey.patch_all()` before importing the app (main.py's `serve` does).
"""
from __future__ import annotations

import os
import signal
import socket

import gevent
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

BACKLOG = 1024  # room for bursts of new connections while the process is busy


class RequestHandler(WebSocketHandler):
    """WebSocket-capable handler that is fair between connections and logs only when asked.

    - pywsgi serves a keep-alive connection's requests in a loop without yielding: under load one
      busy connection held the loop for 100-350 ms, stalling every other request and push. Yielding
      after each request cut p99 under 32-connection load from ~340 ms to 8-30 ms (bench/README.md).
    - geventwebsocket sends access lines to a logger that prints only in its debug mode, so the
      server's `log` gets them as in pywsgi; with logging off no line is formatted at all.
    """

    def handle_one_request(self):
        result = super().handle_one_request()
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
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)

    bound_host, bound_port = listener.getsockname()[:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    print(f"Serving on http://{bound_host}:{bound_port}", flush=True)
    server.serve_forever()
    print("Server stopped", flush=True)
