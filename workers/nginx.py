"""The balancer in front of the workers: Debian's nginx, run as children with configurations we write.

Two nginx instances, so that a rolling restart fails no request:
- The *front* listens on HOST:PORT and never changes. It passes every request to the back over a
  Unix socket, one connection per request (no keep-alive on that hop).
- The *back* knows the workers and is reloaded whenever one is replaced. A reload replaces nginx's
  worker processes, and the old ones close their idle keep-alive connections at once. A client
  that sends a request on such a connection at that moment gets it closed without an answer
  (python-requests: RemoteDisconnected; about one request per 3-5 reloads under a tight loop).
  Here only the back reloads, and it never holds an idle connection: the front's connections carry
  one request each. The clients' keep-alive connections stay with the front, which is not reloaded.
  The extra hop costs ~40 µs of CPU a request (nginx ~90 µs in all, against ~50 µs for one instance).

Routing, in the back:
- Plain requests go round robin, so the workers share the load even when every client comes from
  one address.
- Socket.IO needs stickiness: a long-polling session lives in one worker, and every poll and the
  WebSocket upgrade must reach it. `ip_hash` would send every client behind one address (a NAT,
  loopback) to one worker, so `/socket.io/` is routed by a cookie instead: the first handshake goes
  round robin, the answer sets `recs_worker=<slot>`, and later requests follow the slot. Browsers and
  python-socketio's client keep cookies and send them with the upgrade. A slot's upstream lists
  the other workers as `backup`, so a client whose worker is gone reconnects on another. The cookie
  names the slot, not the port, so clients follow a rolling restart to the new worker of their slot.
- A request to a worker that refuses connections (dead, or stopping) is passed to the next one
  (nginx's default `error timeout`). nginx never resends a POST that reached a worker, so the
  balancer never applies an event twice; such a POST gets 502 and was not acknowledged.
- Draining: the supervisor rewrites the back's configuration without the old worker and reloads it.
  New requests then go only to the listed workers, and the old back processes finish what they
  hold. `/generation` on a private Unix socket says which configuration answers, so the supervisor
  knows when a reload is in effect. The old worker never closes a connection the back might still
  use, because the back's new processes never opened one to it.
- Errors nginx itself answers (body too large, no worker answered) are JSON like the app's.
"""
from __future__ import annotations

import grp
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from workers.processes import die_with_parent, ended

COOKIE = "recs_worker"
MAX_OPEN_FILES = 65536
# Idle connections to the workers kept per upstream. Round robin needs many more than the clients'
# concurrency: with 32 for 32 wrk connections nginx closed and reopened ~250 connections a second,
# and two workers served less than one.
SHARED_KEEPALIVE, SLOT_KEEPALIVE = 256, 16
RELOAD_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
# Old nginx processes keep the WebSockets they proxy until this long after a reload; then the
# Socket.IO clients reconnect through the new configuration.
SHUTDOWN_TIMEOUT_SECONDS = 60
# Both hops forward the WebSocket upgrade; other requests ask the next hop to keep the connection
# (back to the workers) or to close it (front to back: one request per connection).
UPGRADE_MAP = """map $http_upgrade $connection_header {{
        default upgrade;
        "" "{otherwise}";
    }}"""


class BalancerError(RuntimeError):
    """nginx is missing, refused its configuration or did not come up; the message says which."""


def nginx_path() -> str:
    """Debian puts nginx in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BalancerError("nginx is not installed; on Debian: apt-get install -y nginx")
    return found


@dataclass(frozen=True)
class Layout:
    """What the configurations say: where to listen and which worker port serves each slot."""

    host: str
    port: int
    slots: tuple[int, ...]  # slot -> the port of its worker on 127.0.0.1
    max_body_bytes: int


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _user_directive() -> str:
    """As root, nginx's workers drop to nobody (its compiled default group does not exist on Debian)."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"


def _open_files() -> int:
    """As many descriptors as nginx may have: a proxied connection takes two (client and worker)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)


def _config(instance: "Nginx", generation: int, max_body_bytes: int, forwarded: tuple[str, str], http: str) -> str:
    """What both instances share around their own `http` part: process settings, temp paths, headers.

    Every proxy_set_header is here, on one level: a level that sets any of them inherits none.
    `forwarded` is the X-Forwarded-For and X-Forwarded-Proto values this instance sends."""
    directory, open_files = instance.directory, _open_files()
    return f"""# Written by `python main.py serve --workers N`, rewritten at every change: do not edit.
daemon off;
worker_processes 1;
pid {directory}/{instance.name}.pid;
error_log stderr warn;
{_user_directive()}
worker_shutdown_timeout {SHUTDOWN_TIMEOUT_SECONDS}s;
worker_rlimit_nofile {open_files};

events {{
    worker_connections {open_files // 2};
}}

http {{
    access_log off;
    server_tokens off;
    default_type application/json;
    client_body_temp_path {directory}/{instance.name}-client-body;
    proxy_temp_path {directory}/{instance.name}-proxy;
    fastcgi_temp_path {directory}/{instance.name}-fastcgi;
    uwsgi_temp_path {directory}/{instance.name}-uwsgi;
    scgi_temp_path {directory}/{instance.name}-scgi;
    client_max_body_size {max_body_bytes};
    proxy_http_version 1.1;
    proxy_set_header Connection $connection_header;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For {forwarded[0]};
    proxy_set_header X-Forwarded-Proto {forwarded[1]};
{http}
    server {{
        listen unix:{instance.control};
        location = /generation {{
            return 200 '{generation}';
        }}
    }}
}}
"""


ERROR_PAGES = """
        error_page 413 @payload_too_large;
        error_page 502 @bad_gateway;
        error_page 504 @gateway_timeout;
        location @payload_too_large {{
            return 413 '{{"error": "payload_too_large", "message": "the request body is over {max_body_bytes} bytes"}}';
        }}
        location @bad_gateway {{
            return 502 '{{"error": "bad_gateway", "message": "no worker answered the request"}}';
        }}
        location @gateway_timeout {{
            return 504 '{{"error": "gateway_timeout", "message": "no worker answered the request in time"}}';
        }}"""


def render_front(front: "Nginx", back: "Nginx", layout: Layout) -> str:
    """The front: HOST:PORT to the back's socket, one request per connection. It never changes."""
    return _config(front, 0, layout.max_body_bytes, ("$proxy_add_x_forwarded_for", "$scheme"), f"""
    {UPGRADE_MAP.format(otherwise="close")}

    server {{
        listen {_address(layout.host, layout.port)} backlog=1024;

        location / {{
            proxy_pass http://unix:{back.socket}:;
        }}
{ERROR_PAGES.format(max_body_bytes=layout.max_body_bytes)}
    }}
""")


def render_back(back: "Nginx", layout: Layout, generation: int) -> str:
    """The back: round robin, and the Socket.IO cookie, over the workers of `layout`."""
    workers = [f"127.0.0.1:{port}" for port in layout.slots]
    slot_names = [f"w{slot}" for slot in range(len(workers))]
    upstreams = [
        "upstream workers {\n" + "".join(f"        server {address};\n" for address in workers)
        + f"        keepalive {SHARED_KEEPALIVE};\n    }}"
    ]
    for slot, address in enumerate(workers):
        backups = "".join(f"        server {other} backup;\n" for other in workers if other != address)
        upstreams.append(f"upstream {slot_names[slot]} {{\n        server {address};\n{backups}"
                         f"        keepalive {SLOT_KEEPALIVE};\n    }}")
    by_cookie = "".join(f"        {name} {name};\n" for name in slot_names)
    # $upstream_addr lists every worker tried; the last one answered.
    by_answer = "".join(f"        ~(^|\\s){address.replace('.', '[.]')}$ {name};\n"
                        for address, name in zip(workers, slot_names))
    separator = "\n    "
    forwarded = ("$http_x_forwarded_for", "$http_x_forwarded_proto")  # the front's, passed on
    return _config(back, generation, layout.max_body_bytes, forwarded, f"""
    {separator.join(upstreams)}

    {UPGRADE_MAP.format(otherwise="")}
    map $cookie_{COOKIE} $sticky_upstream {{
        default workers;
{by_cookie}    }}
    map $upstream_addr $answered_by {{
        default "";
{by_answer}    }}
    map "$cookie_{COOKIE}|$answered_by" $set_worker_cookie {{
        ~^([^|]*)\\|\\1$ "";
        ~\\|$ "";
        default "{COOKIE}=$answered_by; Path=/; HttpOnly; SameSite=Lax";
    }}

    server {{
        listen unix:{back.socket} backlog=1024;
        proxy_connect_timeout 2s;

        location / {{
            proxy_pass http://workers;
        }}
        location /socket.io/ {{
            proxy_pass http://$sticky_upstream;
            add_header Set-Cookie $set_worker_cookie always;
        }}
{ERROR_PAGES.format(max_body_bytes=layout.max_body_bytes)}
    }}
""")


class Nginx:
    """One nginx as a child process: start on a configuration, reload a new one, stop."""

    def __init__(self, binary: str, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self.config = directory / f"{name}.conf"
        self.socket = directory / f"{name}.sock"  # the back's address for the front
        self.control = directory / f"{name}-control.sock"
        self._binary = binary
        self.process: subprocess.Popen | None = None
        self.generation = 0

    def _command(self, *extra: str) -> list[str]:
        return [self._binary, "-p", f"{self.directory}/", "-c", str(self.config), "-e", "stderr", *extra]

    def _write(self, config: str, generation: int) -> None:
        """Write and test the configuration: a bad one must fail here, not leave a reload hanging."""
        self.config.write_text(config)
        tested = subprocess.run(self._command("-t", "-q"), capture_output=True, text=True, timeout=30)
        if tested.returncode != 0:
            raise BalancerError(f"nginx refused {self.config}: {tested.stderr.strip()}")
        self.generation = generation

    def start(self, config: str, generation: int = 0) -> None:
        """Start nginx on `config`; return once it answers (raise BalancerError if it exits)."""
        self._end_leftovers()
        self._write(config, generation)
        self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent)
        self._wait_for_generation()

    def reload(self, config: str, generation: int) -> None:
        """Switch to `config`; return once new connections get it. In-flight requests finish on the old one."""
        self._write(config, generation)
        self.process.send_signal(signal.SIGHUP)
        self._wait_for_generation()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def quit(self) -> None:
        """Stop accepting connections now; what is in flight finishes (see `stop`)."""
        if self.alive():
            self.process.send_signal(signal.SIGQUIT)

    def stop(self) -> None:
        """Graceful stop (SIGQUIT: in-flight requests finish), then fast (SIGTERM), then SIGKILL."""
        if self.process is None:
            return
        for signum, wait in ((signal.SIGQUIT, STOP_TIMEOUT_SECONDS), (signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(signum)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._end_leftovers()

    def _end_leftovers(self) -> None:
        """After a master that died: its workers, which nginx does not stop then and which still hold
        the listening sockets, and its Unix socket files, which nginx does not remove and cannot
        bind again. The workers are in the master's process group (its own session)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in (self.socket, self.control):
            path.unlink(missing_ok=True)

    def _wait_for_generation(self) -> None:
        deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BalancerError(f"nginx ({self.name}) exited with code {self.process.returncode} "
                                    "(its messages are above)")
            if self._answering_generation() == self.generation:
                return
            time.sleep(0.02)
        raise BalancerError(f"nginx ({self.name}) did not take configuration {self.generation} "
                            f"within {RELOAD_TIMEOUT_SECONDS:.0f} s")

    def _answering_generation(self) -> int | None:
        """The generation a new connection gets now, None while nginx does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
                control.settimeout(2)
                control.connect(str(self.control))
                control.sendall(b"GET /generation HTTP/1.0\r\nHost: control\r\n\r\n")
                answer = b""
                while chunk := control.recv(4096):
                    answer += chunk
        except OSError:
            return None
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(body) if head.startswith(b"HTTP/1.1 200") and body.isdigit() else None


class Balancer:
    """The front and the back together, as the supervisor uses them."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.front, self.back = Nginx(binary, directory, "front"), Nginx(binary, directory, "back")

    @property
    def configs(self) -> str:
        return f"{self.front.config}, {self.back.config}"

    def _back_config(self, layout: Layout) -> tuple[str, int]:
        """The back's configuration for `layout`, under the next generation number."""
        generation = self.back.generation + 1
        return render_back(self.back, layout, generation), generation

    def start(self, layout: Layout) -> None:
        """The back first: the front then has somewhere to send from its first request on."""
        self.back.start(*self._back_config(layout))
        self.front.start(render_front(self.front, self.back, layout))

    def reload(self, layout: Layout) -> None:
        self.back.reload(*self._back_config(layout))

    def restart_dead(self, layout: Layout) -> str | None:
        """Start again an instance that exited; say which, or None when both run."""
        for instance in (self.back, self.front):
            if not instance.alive():
                code = instance.process.returncode
                if instance is self.back:
                    self.back.start(*self._back_config(layout))
                else:
                    self.front.start(render_front(self.front, self.back, layout))
                return f"nginx ({instance.name}) {ended(code)}; started it again"
        return None

    def quit(self) -> None:
        """The front stops accepting; the back still serves what the front holds."""
        self.front.quit()

    def stop(self) -> None:
        self.front.stop()
        self.back.stop()
