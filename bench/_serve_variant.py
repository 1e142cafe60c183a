"""The app served under an async mode other than production's gevent, for bench/async_modes.py only.

Like `main.py serve`: one process, `web.create_app` from the environment (ASYNC_MODE, DATABASE_URL)
and the same background jobs; only the server and the concurrency library differ.

    python -m bench._serve_variant eventlet PORT            eventlet.wsgi after eventlet.monkey_patch()
    gunicorn -k gthread ... 'bench._serve_variant:threading_app()'    Flask-SocketIO's threading mode

Run from the project root, so that `bench` and `web` are importable.
"""
from __future__ import annotations

import sys

BACKLOG = 1024  # as web/server.py


def _app():
    """The app plus its background jobs; imported late so eventlet can patch the standard library first."""
    from web import create_app
    from web.background import start_background_work

    app = create_app()
    start_background_work(app)
    return app


def serve_eventlet(port: int) -> None:
    """eventlet's WSGI server on 127.0.0.1:port, with TCP_NODELAY set as web/server.py sets it."""
    import eventlet

    eventlet.monkey_patch()
    import socket

    import eventlet.wsgi

    app = _app()
    listener = eventlet.listen(("127.0.0.1", port), backlog=BACKLOG)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    eventlet.wsgi.server(listener, app, log_output=False)


def threading_app():
    """gunicorn's app factory: ASYNC_MODE=threading comes from the environment."""
    return _app()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "eventlet":
        sys.exit("usage: python -m bench._serve_variant eventlet PORT")
    serve_eventlet(int(sys.argv[2]))
