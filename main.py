"""Command line of the recommendation service.

    python main.py serve [--host H] [--port P] [--workers N|auto]
                                                 production HTTP server; N > 1: N processes behind nginx
    python main.py shell [--url URL]             interactive shell against a running server
    python main.py load --format F PATH [--items ITEMS_CSV]
                                                 load a data set (preprocess/loaders) into the store
    python main.py train [--engine local|spark] [--spark-master URL]
                                                 fit on the log, write a model artifact to MODEL_DIR, exit
    python main.py evaluate --dataset F --data-dir PATH [--items CSV] [--json OUT] [--out-dir DIR]
                            [--models a,b] [--max-users N] [--protocol holdout|next-event]
                                                 offline evaluation against reference models (models/)
    python main.py                               menu (on a terminal) or serve (without one)

Each subcommand imports what it needs when it runs, so `shell` never loads numpy and only
`serve` monkey-patches the standard library for gevent.
"""
import os

# Before anything imports numpy: one BLAS thread per process. With BLAS threads on, a numpy route
# falls from ~8,500 to ~400 req/s on a 2-core machine (the BLAS threads fight the server for cores).
for _variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

MAIN_PATH = Path(__file__).resolve()

MENU = """
Real-time Recommendation Engine
  1. Start the complete system (server + interactive shell)
  2. Start the server only
  3. Start the interactive shell only (connect to a running server)
  4. Exit
"""


class ServerStartError(RuntimeError):
    """The server child process did not come up; the message says why."""


class ServerProcess:
    """`python main.py serve` as a child process, stopped again on exit.

    Used by the complete system (menu option 1) and by the tests, so both exercise the same
    start-up and shutdown path a user gets.
    """

    def __init__(self, port: int, host: str | None = None, *, env: dict[str, str] | None = None,
                 stdout=None, stderr=None, startup_timeout: float = 60.0) -> None:
        """`host` None leaves the address to the server's own default (HOST, else 127.0.0.1)."""
        self.port, self.host = port, host
        self.url = local_url(host or "127.0.0.1", port)
        self._env, self._stdout, self._stderr = env, stdout, stderr
        self._startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        """Start the child and return once GET /health answers; raise ServerStartError if it doesn't."""
        if _port_in_use(self.url):
            raise ServerStartError(f"something is already listening at {self.url}; stop it or choose another PORT")
        # A session of its own: Ctrl-C in the terminal reaches only the foreground shell, which then
        # stops the server in order instead of both dying at once.
        self.process = subprocess.Popen(
            self.command(), env=self._env, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr,
            start_new_session=True, cwd=MAIN_PATH.parent,
        )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def command(self) -> list[str]:
        """What runs the server: `main.py serve` (a bench may start another server the same way)."""
        command = [sys.executable, str(MAIN_PATH), "serve", "--port", str(self.port)]
        return command if self.host is None else [*command, "--host", self.host]

    def _wait_until_healthy(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: no proxy
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(f"the server exited with code {code} before answering {self.url}/health")
            try:
                with opener.open(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        raise ServerStartError(f"the server did not answer {self.url}/health within {self._startup_timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the child (the server shuts down cleanly on it), SIGKILL if it hangs; return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to host:port (wildcards -> loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _port_in_use(url: str) -> bool:
    address = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=1):
            return True
    except OSError:
        return False


def _settings(host: str | None = None, port: int | None = None):
    from config import load_settings

    return load_settings(**{key: value for key, value in (("host", host), ("port", port)) if value is not None})


def serve(host: str | None = None, port: int | None = None) -> int:
    """Run the production server in this process until SIGTERM/SIGINT."""
    from gevent import monkey

    monkey.patch_all()  # before the app imports sockets, threads, database drivers

    from web import create_app, get_service
    from web.background import start_background_work
    from web.observability import configure_logging
    from web.server import run_server

    settings = _settings(host, port)
    configure_logging(settings)
    app = create_app(settings)
    scheduler, follower = start_background_work(app)
    try:
        run_server(app, settings.host, settings.port)
    except OSError as error:  # typically the port is taken or the address is not local
        print(f"Cannot serve on {settings.host}:{settings.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    finally:
        scheduler.shutdown(wait=False)
        follower.stop()
        with app.app_context():
            get_service().close()  # create_app leaves the service's lifetime (its database) to us
    return 0


def run_complete_system() -> int:
    """Menu option 1: the server as a child process, the shell in the foreground talking to it over HTTP.

    The shell blocks on input while the REST API stays available to other clients.
    """
    from shell.interactive import run_shell

    settings = _settings()
    # Closing the terminal or a kill should stop the child server too: turn them into SystemExit
    # so the `with` block below unwinds.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda received, frame: sys.exit(128 + received))
    try:
        with ServerProcess(settings.port, settings.host) as server:
            print(f"Server started (pid {server.process.pid}) at {server.url}", flush=True)
            return run_shell(server.url)
    except ServerStartError as error:
        print(f"Could not start the server: {error}", file=sys.stderr)
        return 1


def run_menu() -> int:
    """The engine README's start menu: 1 = server + shell, 2 = server, 3 = shell, 4 = exit."""
    actions: dict[str, Callable[[], int]] = {
        "1": run_complete_system,
        "2": serve,
        "3": open_shell,
        "4": lambda: 0,
    }
    print(MENU)
    while True:
        try:
            choice = input("Choose an option [1-4]: ").strip()
        except EOFError:
            print()
            return 0
        if choice in actions:
            return actions[choice]()
        print("Please enter 1, 2, 3 or 4.")


def open_shell(url: str | None = None) -> int:
    """The interactive shell against a running server (default: the one HOST/PORT point at)."""
    from shell.interactive import run_shell

    if url is None:
        settings = _settings()
        url = local_url(settings.host, settings.port)
    return run_shell(url)


def cmd_serve(args: argparse.Namespace) -> int:
    """One worker: this process serves, as always. More: a supervisor runs them behind nginx (workers/)."""
    if args.workers == 1:
        return serve(args.host, args.port)
    from workers import run_workers

    settings = _settings(args.host, args.port)
    return run_workers(settings, args.workers, local_url(settings.host, settings.port))


def cmd_shell(args: argparse.Namespace) -> int:
    return open_shell(args.url)


def cmd_load(args: argparse.Namespace) -> int:
    """Load a data set into the store DATABASE_URL names; the engine picks it up at its next (re)build."""
    from preprocess.load_command import run_load

    try:
        run_load(args.format, args.path, args.items, _settings().database_url)
    except (FileNotFoundError, ValueError) as error:
        print(f"Cannot load {args.path}: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fit on the whole log, write a model artifact to MODEL_DIR, print a summary, exit."""
    import json
    import resource

    from tqdm import tqdm

    from recommenders.registry import registrations
    from service import train
    from storage import Store

    settings = _settings()
    started = time.perf_counter()
    interactive = sys.stderr.isatty()
    spark_master = (args.spark_master or settings.spark_master) if args.engine == "spark" else None
    try:
        store = Store(settings.database_url)
        try:
            with tqdm(total=len(registrations()) + (settings.ranker != "off"), desc="reading the log", unit="model",
                      disable=not interactive) as bar:
                def fitted(name: str) -> None:
                    bar.set_description(f"fitted {name}")
                    bar.update()
                artifact = train(store, settings, on_component=fitted, spark_master=spark_master)
        finally:
            store.close()
    except (OSError, ValueError) as error:  # MODEL_DIR not writable, an unsupported DATABASE_URL
        print(f"Cannot train: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        reason = Store.unavailable_reason(error)
        if reason is None:
            raise
        print(f"Cannot train: {reason} (DATABASE_URL)", file=sys.stderr)
        return 1
    manifest = artifact.manifest
    summary = {"artifact": str(artifact.path), "version": artifact.version, "engine": manifest["engine"],
               "left_out": manifest["left_out"],
               "fitted_through_seq": artifact.fitted_through_seq, **manifest["counts"],
               "fit_seconds": manifest["fit_seconds"], "seconds": round(time.perf_counter() - started, 2),
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if interactive:
        print(f"Wrote {summary['artifact']} ({summary['engine']}): {summary['users']:,} users, "
              f"{summary['items']:,} items, "
              f"{summary['interactions']:,} events through seq {summary['fitted_through_seq']:,}; "
              f"fit {summary['fit_seconds']} s, total {summary['seconds']} s, peak RSS {summary['peak_rss_mib']} MiB")
    else:
        print(json.dumps(summary))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Offline evaluation: print the table, write report.md + chart (and --json); see models/evaluate.py."""
    from models.evaluate import run_evaluation
    from models.next_event import run_next_event

    try:
        if args.protocol == "next-event":
            if args.tune or args.models:
                raise ValueError("--tune and --models apply to the holdout protocol only; next-event scores its "
                                 "fixed rows")
            return run_next_event(args.dataset, args.data_dir, args.items, args.json, args.out_dir, args.max_users)
        return run_evaluation(args.dataset, args.data_dir, args.items, args.json, args.out_dir,
                              args.models, args.max_users, tune=args.tune)
    except (FileNotFoundError, ValueError) as error:
        print(f"Cannot evaluate {args.data_dir}: {error}", file=sys.stderr)
        return 1


# Subcommand name -> handler; each handler imports its own dependencies.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "shell": cmd_shell,
    "load": cmd_load,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    from preprocess.loaders import FORMATS  # imports no pandas (that comes with the load handler)
    from workers import worker_count  # imports the standard library only

    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Real-time recommendation service. Without a subcommand: the start menu on a "
                    "terminal, otherwise the server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="run the production HTTP server")
    serve_parser.add_argument("--host", help="address to bind (default: $HOST or 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind (default: $PORT or 5000)")
    serve_parser.add_argument("--workers", type=worker_count, default=1, metavar="N|auto",
                              help="server processes behind nginx on that address (default 1: no nginx; "
                                   "auto: one per core)")

    shell_parser = commands.add_parser("shell", help="interactive shell against a running server")
    shell_parser.add_argument("--url", help="server URL (default: http://$HOST:$PORT, i.e. http://127.0.0.1:5000)")

    load_parser = commands.add_parser("load", help="load a data set into the store ($DATABASE_URL)")
    load_parser.add_argument("--format", required=True, choices=FORMATS, help="the data set's format")
    load_parser.add_argument("path", type=Path, help="the data set's folder or file")
    load_parser.add_argument("--items", type=Path, metavar="ITEMS_CSV",
                             help="csv format only: the catalog, item_id,name,category,description")

    train_parser = commands.add_parser("train", help="fit on the whole log and write a model artifact to $MODEL_DIR "
                                                     "(then exit)")
    train_parser.add_argument("--engine", choices=("local", "spark"), default="local",
                              help="local (default): fit in this process; spark: fit what scales on Apache Spark")
    train_parser.add_argument("--spark-master", metavar="URL",
                              help="--engine spark: the cluster, e.g. spark://host:7077 (default: the SPARK_MASTER "
                                   "setting)")

    evaluate_parser = commands.add_parser("evaluate", help="offline evaluation of every recommender and the references")
    evaluate_parser.add_argument("--dataset", required=True, choices=FORMATS, help="the data set's format")
    evaluate_parser.add_argument("--data-dir", required=True, type=Path, help="the data set's folder (csv: the events file)")
    evaluate_parser.add_argument("--items", type=Path, metavar="CSV", help="csv format only: the catalog")
    evaluate_parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    evaluate_parser.add_argument("--out-dir", type=Path, metavar="DIR", help="report folder (default: reports/<dataset>)")
    evaluate_parser.add_argument("--models", type=lambda names: [n for n in names.split(",") if n], metavar="a,b",
                                 help="only these models (default: all of ours and every reference)")
    evaluate_parser.add_argument("--tune", action="store_true",
                                 help="also tune the collaborative weights on a validation split of the training data")
    evaluate_parser.add_argument("--max-users", type=int, metavar="N",
                                 help="score a random sample of N test users (models still train on everything; "
                                      "next-event: default 1000)")
    evaluate_parser.add_argument("--protocol", choices=("holdout", "next-event"), default="holdout",
                                 help="holdout (default): a per-user 80/20 split of pairs; next-event: replay the "
                                      "events after a time cut-off through the live path (models/next_event.py)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command:
            return COMMANDS[args.command](args)
        return run_menu() if sys.stdin.isatty() else serve()
    except KeyboardInterrupt:
        print()
        return 130


if __name__ == "__main__":
    sys.exit(main())
