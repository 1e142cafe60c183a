"""`python main.py serve` as a real process: real sockets, real HTTP, real signals.

The `server` fixture (conftest.py) is module-scoped: one start per module, a few seconds.
"""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import free_port
from main import MAIN_PATH

pytestmark = pytest.mark.slow


def get_json(connection: http.client.HTTPConnection, path: str) -> tuple[int, dict]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_routes_answer_over_real_http(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.process.port, timeout=10)
    status, health = get_json(connection, "/health")
    assert (status, health["status"]) == (200, "ok")
    status, answer = get_json(connection, "/recommendations/alice?count=3")
    assert status == 200
    assert answer["user_id"] == "alice" and len(answer["recommendations"]) == 3
    status, answer = get_json(connection, "/items?limit=2")
    assert status == 200 and len(answer["items"]) == 2
    status, answer = get_json(connection, "/no/such/route")
    assert (status, answer["error"]) == (404, "not_found")


def test_keep_alive_serves_two_requests_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.process.port, timeout=10)
    assert get_json(connection, "/health")[0] == 200
    first_socket = connection.sock
    assert first_socket is not None, "the server closed the connection after one request"
    assert get_json(connection, "/popular?count=2")[0] == 200
    assert connection.sock is first_socket


def test_accepted_connections_inherit_tcp_nodelay():
    """Without TCP_NODELAY a keep-alive client waits ~44 ms per answer for the delayed ACK."""
    from web.server import listening_socket

    with listening_socket("127.0.0.1", 0) as listener:
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_binds_loopback_by_default(server):
    """No --host and no HOST: only 127.0.0.1 listens, nothing on all interfaces."""
    port_hex = f"{server.process.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if port == port_hex and state == "0A":  # 0A = LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex
    assert f"Serving on http://127.0.0.1:{server.process.port}" in server.stdout.read_text()


def test_shell_command_does_not_import_numpy():
    """`main.py shell` stays light: numpy and the app load only on the serve path."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(MAIN_PATH.parent)!r})\n"
        "import main\n"
        "exit_code = main.main(['shell', '--url', sys.argv[1]])\n"
        "print(exit_code, 'numpy' in sys.modules, 'gevent' in sys.modules)\n"
    )
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-c", code, unreachable], capture_output=True, text=True, timeout=60)
    assert "Cannot reach the server" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "1 False False"


# Keep last: it stops this module's server.
def test_sigterm_stops_the_server_cleanly(server):
    server.process.process.send_signal(signal.SIGTERM)
    assert server.process.process.wait(timeout=15) == 0
    stdout, stderr = server.stdout.read_text(), server.stderr.read_text()
    assert "Server stopped" in stdout
    assert "development server" not in stderr + stdout
    assert '"GET /health HTTP/1.1" 200' not in stderr + stdout  # no access log unless LOG_REQUESTS=1
    assert "Traceback" not in stderr
