"""Connecting to Ray: a private embedded Ray, or the cluster a user names, within bounded time.

- No address, or ``local``: an embedded Ray of this process's own, whatever else runs on the
  machine. It never reads or writes ``/tmp/ray`` (its temp dir is a fresh, short, private
  directory), binds every socket to loopback, starts its workers outside the user's current
  directory (so no module there shadows one the workers import), and takes its processes
  down with it: workers die with their raylet, and whatever a killed runner left behind is
  removed by the next embedded start.
- ``auto``: the cluster named by Ray's address file (``<ray temp dir>/ray_current_cluster``,
  which honours ``RAY_TMPDIR``/``TMPDIR``) when it answers; an embedded Ray when there is no
  file or when the cluster it names is gone (a stale file). The event log says which.
- ``host:port`` (a GCS) or ``ray://host:port`` (a Ray client server): that cluster. An address
  that is malformed, or that does not answer within ``DJ_RUNNER_RAY_CONNECT_TIMEOUT_S``
  (default 30 s; a ``ray://`` connect is retried within it, as a head may still be starting),
  raises :class:`RayAddressError`, exit code 2. With ``DJ_RUNNER_RAY_MIN_NODES`` set, the
  runner then waits, within the same timeout, until that many nodes are alive; fewer raise
  :class:`RayUnavailable` (exit 7, retryable: a node may still be starting).

An embedded Ray whose raylet does not register within the 30 s Ray allows it (on an overloaded
machine) is taken down and started once more, then is :class:`RayUnavailable` too.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dj_runner import contract
from dj_runner.engine.environ import environ_for
from dj_runner.errors import RayUnavailable, RunnerError, short_error

log = logging.getLogger(__name__)

#: Set in every process the embedded Ray starts, to the session's temp dir: how the runner
#: finds (and stops) exactly the processes it started.
SESSION_ENV = "DJ_RUNNER_RAY_SESSION"
# How many Ray nodes (the head included) a joined cluster must have alive before the job is
# planned is contract.ENV_RAY_MIN_NODES: a cluster manager reports pods ready a few seconds
# before their nodes join Ray. How long to wait for them: contract.ENV_RAY_CONNECT_TIMEOUT.
_SESSION_PREFIX = "djr-"
_OWNER_LOCK = "owner.lock"
#: Unix socket paths (``<root>/djr-<pid>-<8>/session_<date>_<time>_<pid>/sockets/plasma_store``)
#: must stay under 108 bytes: about 22 bytes for our directory and 61 for Ray's session and
#: socket names leave 24 for the root; a longer temp root falls back to /tmp.
_MAX_TEMP_ROOT = 24
_SETUP_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # ray_constants, read by workers
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"^(?P<scheme>ray://)?(?P<host>{_HOST}):(?P<port>[0-9]{{1,5}})$")

_session: _EmbeddedSession | None = None


class RayAddressError(RunnerError):
    """A Ray address is malformed or does not answer. The CLI exits with 2."""

    exit_code = 2


@dataclass(frozen=True)
class RayTarget:
    """Where to run: ``embedded``, ``auto``, ``gcs`` (host:port) or ``client`` (ray://)."""

    mode: str
    address: str | None = None
    host: str | None = None
    port: int | None = None
    source: str = "default"


@dataclass(frozen=True)
class RayConnection:
    address: str  # "embedded" or the address connected to
    cpus: int
    mode: str = "embedded"  # embedded | joined | client
    temp_dir: str | None = None  # the embedded Ray's private temp dir


@dataclass(frozen=True)
class _EmbeddedSession:
    temp_dir: str
    lock_fd: int
    pid: int


# ---------------------------------------------------------------------------- addresses


def parse_address(value: str | None, source: str = "ray address") -> RayTarget:
    """The target an address names, or RayAddressError naming the value and what is valid."""
    if value is None or value == "" or value == "local":
        return RayTarget("embedded", source=source)
    if value == "auto":
        return RayTarget("auto", source=source)
    m = _ADDRESS.match(value.strip())
    port = int(m["port"]) if m else 0
    if m is None or not 1 <= port <= 65535:
        raise RayAddressError(
            f"{source} {value!r} is not a Ray address; expected 'local' (an embedded Ray, the "
            "default), 'auto', 'host:port' (a Ray head's GCS) or 'ray://host:port' "
            "(a Ray client server), with a port from 1 to 65535"
        )
    host = m["host"].strip("[]")
    mode = "client" if m["scheme"] else "gcs"
    return RayTarget(mode, value.strip(), host, port, source)


def resolve_target(address: str | None) -> RayTarget:
    """The target for ``address`` (the command line's or the recipe's), else ``RAY_ADDRESS``."""
    if address:
        return parse_address(address, "Ray address")
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return parse_address(env, "RAY_ADDRESS")
    return RayTarget("embedded")


def connect_timeout() -> float:
    raw = os.environ.get(contract.ENV_RAY_CONNECT_TIMEOUT, "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RayAddressError(
            f"{contract.ENV_RAY_CONNECT_TIMEOUT}={raw!r}: expected a number of seconds > 0"
        )
    return value


def _answers(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port succeeds within ``timeout``; else the last
    error. Retries until then (a head that is starting, a name not yet in DNS)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, remaining))):
                return None
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + 0.25 >= deadline:
            return last
        time.sleep(0.25)


def preflight(address: str | None) -> RayTarget:
    """Check a target before any work: a malformed address, or one that does not answer,
    raises RayAddressError. For the embedded mode, clean up after killed runners."""
    target = resolve_target(address)
    if target.mode in ("gcs", "client"):
        min_nodes()
        _require_answer(target, connect_timeout())
    elif target.mode == "embedded":
        sweep_stale_sessions()
    return target


def _require_answer(target: RayTarget, timeout: float) -> None:
    assert target.host is not None and target.port is not None
    error = _answers(target.host, target.port, timeout)
    if error is not None:
        raise RayAddressError(
            f"{target.source} {target.address!r}: no Ray cluster answered there within "
            f"{timeout:g} s ({error}); check the address and that the cluster runs "
            f"(the wait is {contract.ENV_RAY_CONNECT_TIMEOUT})"
        )


# ---------------------------------------------------------------------------- connecting


def connect(address: str | None, num_cpus: int | None, events: Any | None = None) -> RayConnection:
    """Connect to Ray once per process (see the module docstring for the modes).

    ``events``: an EventLogger; a ``ray_connected`` event says which Ray the job runs on.
    """
    import ray

    if ray.is_initialized():
        conn = _current()
    else:
        target = resolve_target(address)
        common = {"logging_level": logging.WARNING, "log_to_driver": False}
        note = ""
        if target.mode == "auto":
            target, note = _resolve_auto()
        if target.mode == "embedded":
            conn = _start_embedded_retried(num_cpus, common)
        elif target.mode == "client":
            conn = _join_client(target, common)
        else:
            conn = _join_gcs(target, common)
        if note:
            log.info(note)
        if events is not None:
            events.log(
                "ray_connected",
                _describe(conn, target, note),
                ray_mode=conn.mode,
                ray_address=conn.address,
                ray_address_source=target.source,
                ray_temp_dir=conn.temp_dir,
                cpus=conn.cpus,
            )
    return conn


def _describe(conn: RayConnection, target: RayTarget, note: str) -> str:
    if conn.mode == "embedded":
        text = f"started an embedded Ray ({conn.cpus} CPUs, loopback only, in {conn.temp_dir})"
    else:
        text = f"joined the Ray cluster at {conn.address} ({conn.cpus} CPUs)"
        if target.source != "Ray address":
            text += f", named by {target.source}"
    return f"{text}; {note}" if note else text


def _current() -> RayConnection:
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if _session is not None:
        return RayConnection("embedded", cpus, "embedded", _session.temp_dir)
    return RayConnection("connected", cpus, "joined")


def _resolve_auto() -> tuple[RayTarget, str]:
    """``auto``: the cluster in Ray's address file if it answers, else an embedded Ray."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        named = Path(path).read_text().strip()
    except OSError:
        return RayTarget("embedded", source="auto"), (
            f"auto: no Ray cluster address in {path}; started an embedded Ray"
        )
    try:
        target = parse_address(named, f"the address file {path}")
    except RayAddressError as exc:
        return RayTarget("embedded", source="auto"), f"auto: {exc}; started an embedded Ray"
    target = RayTarget(target.mode, target.address, target.host, target.port, path)
    assert target.host is not None and target.port is not None
    if _answers(target.host, target.port, min(3.0, connect_timeout())) is not None:
        return RayTarget("embedded", source="auto"), (
            f"auto: {path} names {named}, which does not answer (a stale file left by a Ray "
            "that is gone); started an embedded Ray"
        )
    return target, ""


def _init_bounded(timeout: float, what: str, **kwargs: Any) -> None:
    """``ray.init`` that gives up after ``timeout`` (Ray itself may retry a GCS forever)."""
    import ray

    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            ray.init(**kwargs)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ray-connect", daemon=True)
    ray_logger = logging.getLogger("ray._private.worker")
    ray_logger.addFilter(_not_main_thread_notice)
    try:
        thread.start()
        thread.join(timeout)
    finally:
        ray_logger.removeFilter(_not_main_thread_notice)
    if "error" not in outcome:
        raise RayAddressError(f"{what}: Ray did not connect within {timeout:g} s")
    if outcome["error"] is not None:
        exc = outcome["error"]
        raise RayAddressError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _not_main_thread_notice(record: logging.LogRecord) -> bool:
    """Drops Ray's notice that ``ray.init`` off the main thread sets no SIGTERM handler: the
    runner handles its signals itself."""
    return not record.getMessage().startswith("SIGTERM handler is not set")


def _join_gcs(target: RayTarget, common: dict[str, Any]) -> RayConnection:
    timeout = connect_timeout()
    _require_answer(target, timeout)
    what = f"{target.source} {target.address!r}"
    with _neutral_cwd(), _loopback_only(target.host in ("127.0.0.1", "::1", "localhost")):
        _init_bounded(timeout, what, address=target.address, **common)
    return _joined(what, time.monotonic() + timeout, str(target.address), "joined")


def _joined(what: str, deadline: float, address: str, mode: str) -> RayConnection:
    """The nodes waited for and the CPUs read on a cluster just joined. A failure there is the
    cluster going away, not a bad address: a head that dies right after the connect leaves Ray
    Client's channel closed (``ValueError: Cannot invoke RPC on closed channel!``). That is
    ``RayUnavailable`` (exit 7, retried), as the same loss a moment later is."""
    try:
        _wait_for_nodes(what, deadline)
        return RayConnection(address, _current().cpus, mode)
    except RunnerError:
        raise
    except Exception as exc:
        raise RayUnavailable(
            f"{what}: lost the connection to Ray right after joining it: {short_error(exc)}"
        ) from None


@contextlib.contextmanager
def _loopback_only(enabled: bool = True) -> Iterator[None]:
    """Keep Ray on loopback: Ray turns 127.0.0.1 into the machine's address (and binds every
    interface) unless clusters are off, as on macOS. Off, every server binds and advertises
    loopback; the setting reaches the processes Ray starts through their environment."""
    import ray._private.ray_constants as ray_constants

    if not enabled:
        yield
        return
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env


def _join_client(target: RayTarget, common: dict[str, Any]) -> RayConnection:
    """A ``ray://`` connect, retried until the timeout: a head that has just started may
    refuse its first client connections."""
    timeout = connect_timeout()
    deadline = time.monotonic() + timeout
    what = f"{target.source} {target.address!r}"
    while True:
        _require_answer(target, max(0.5, deadline - time.monotonic()))
        try:
            _init_bounded(
                max(1.0, deadline - time.monotonic()),
                what,
                address=target.address,
                runtime_env=_worker_runtime_env(),
                **common,
            )
            break
        except RayAddressError:
            if time.monotonic() + 1.0 >= deadline:
                raise
            time.sleep(1.0)
    return _joined(what, deadline, str(target.address), "client")


# ---------------------------------------------------------------------------- embedded Ray


def _temp_root() -> str:
    root = tempfile.gettempdir()
    return root if len(root) <= _MAX_TEMP_ROOT else "/tmp"


#: Ray's own message when its raylet has not registered with the GCS within the 30 s Ray
#: waits for it (fixed in Ray's code): a machine too loaded to start Ray in time.
_RAY_START_TIMED_OUT = "timed out during startup"
#: Starts of the embedded Ray tried before giving up on such a timeout.
EMBEDDED_START_TRIES = 2


def _start_embedded_retried(num_cpus: int | None, common: dict[str, Any]) -> RayConnection:
    """``_start_embedded``; a start whose raylet did not come up in Ray's fixed 30 s is taken
    down whole and tried again, then is ``RayUnavailable`` (exit 7, retried): an overloaded
    machine, not a defect of the job or of the runner."""
    for attempt in range(1, EMBEDDED_START_TRIES + 1):
        try:
            return _start_embedded(num_cpus, common)
        except Exception as exc:
            if _RAY_START_TIMED_OUT not in str(exc):
                raise
            stop_embedded(graceful=True)
            message = (
                f"the embedded Ray did not start (try {attempt} of {EMBEDDED_START_TRIES}): {exc}"
            )
            if attempt == EMBEDDED_START_TRIES:
                raise RayUnavailable(message) from exc
            log.warning("%s; starting it again", message)
    raise AssertionError("unreachable")


def _start_embedded(num_cpus: int | None, common: dict[str, Any]) -> RayConnection:
    _session_token()
    import ray

    global _session
    sweep_stale_sessions()
    temp_dir = tempfile.mkdtemp(prefix=f"{_SESSION_PREFIX}{os.getpid()}-", dir=_temp_root())
    lock_fd = os.open(os.path.join(temp_dir, _OWNER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held for this process's life: the session is live
    _session = _EmbeddedSession(temp_dir, lock_fd, os.getpid())
    atexit.register(stop_embedded, graceful=True)
    # Inherited by the GCS, the raylet, the agents and (through the raylet) every worker:
    env = {
        SESSION_ENV: temp_dir,
        _SETUP_HOOK_ENV: f"{__name__}.worker_setup",
        "PYTHONPATH": _absolute_pythonpath(),
    }
    with (
        environ_for({**env, "RAY_ADDRESS": None}),
        _neutral_cwd(temp_dir),
        _loopback_only(),
        _signal_handlers_kept(),
    ):
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=temp_dir,
            **common,
        )
    return RayConnection("embedded", _current().cpus, "embedded", temp_dir)


def _session_token() -> None:
    """Ray's token authentication for the embedded Ray, with a token of its own.

    Set in this process's environment, which the embedded Ray's processes inherit, and never
    Ray's default token file in the user's home (``~/.ray/auth_token``, machine-wide: written
    by the first ``ray.init`` of any process of the user, read by every Ray started later, and
    raced by two runners starting at once). A user's own ``RAY_AUTH_MODE`` is kept as it is.
    Ray reads the mode when it is imported; where it already was, its settings are read again.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    if "ray" in sys.modules:
        from ray._raylet import Config

        Config.initialize("")


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """``ray.init`` on the main thread replaces the SIGTERM handler with one that exits at once;
    the runner's own handler (a clean stop) stays in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def min_nodes() -> int:
    raw = os.environ.get(contract.ENV_RAY_MIN_NODES, "")
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 1:
        raise RayAddressError(
            f"{contract.ENV_RAY_MIN_NODES}={raw!r}: expected a number of Ray nodes >= 1"
        )
    return value


def _wait_for_nodes(what: str, deadline: float) -> None:
    """Wait until ``DJ_RUNNER_RAY_MIN_NODES`` nodes of the joined cluster are alive."""
    import ray

    wanted = min_nodes()
    alive = 0
    while wanted:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        if alive >= wanted:
            return
        if time.monotonic() >= deadline:
            raise RayUnavailable(
                f"{what}: {alive} of the {wanted} Ray nodes ({contract.ENV_RAY_MIN_NODES}) alive after "
                f"{connect_timeout():g} s ({contract.ENV_RAY_CONNECT_TIMEOUT})"
            )
        time.sleep(0.5)


def _worker_runtime_env() -> dict[str, Any] | None:
    """The job's runtime env on a cluster it joins over Ray Client: the custom op modules
    (``DJ_RUNNER_OP_MODULES``) and the ``PYTHONPATH`` they are found on reach the cluster's
    workers, as they reach an embedded Ray's through the environment."""
    from dj_runner.ops.common.registry import OP_MODULES_ENV

    env_vars = {}
    if os.environ.get(OP_MODULES_ENV):
        env_vars[OP_MODULES_ENV] = os.environ[OP_MODULES_ENV]
        if _absolute_pythonpath():
            env_vars["PYTHONPATH"] = _absolute_pythonpath()
    return {"env_vars": env_vars} if env_vars else None


def _absolute_pythonpath() -> str:
    """PYTHONPATH with relative and empty entries (the current directory) made absolute or
    dropped: the workers run elsewhere and must not import from where the user stands."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(os.path.abspath(p) for p in parts)


class _neutral_cwd:
    """Run ``ray.init`` from a directory holding no modules: Ray puts the driver's current
    directory on every worker's ``sys.path``, ahead of the standard library."""

    _lock = threading.Lock()

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self.previous = ""
        self.created: str | None = None

    def __enter__(self) -> None:
        self._lock.acquire()
        self.previous = os.getcwd()
        if self.directory is None:
            self.directory = self.created = tempfile.mkdtemp(prefix=_SESSION_PREFIX + "cwd-")
        os.chdir(self.directory)

    def __exit__(self, *exc: object) -> None:
        try:
            os.chdir(self.previous)
            if self.created:
                shutil.rmtree(self.created, ignore_errors=True)
        finally:
            self._lock.release()


def worker_setup() -> None:
    """Runs first in every worker of the embedded Ray (Ray's worker setup hook).

    The worker dies the moment its raylet does (which dies with the driver), so no task of a
    killed runner goes on writing to the work dir.
    """
    raylet = os.environ.get("RAY_RAYLET_PID")
    if not sys.platform.startswith("linux") or not raylet or os.getppid() != int(raylet):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(raylet):  # the raylet died before the line above
        os._exit(1)


def is_embedded() -> bool:
    """Whether this process started its own Ray (rather than joining a cluster)."""
    import ray

    return _session is not None and _session.pid == os.getpid() and ray.is_initialized()


def embedded_temp_dir() -> str | None:
    """The embedded Ray's private temp dir, while one runs in this process."""
    return _session.temp_dir if _session is not None and _session.pid == os.getpid() else None


def stop_embedded(graceful: bool = False, timeout: float = 10.0) -> None:
    """Stop every process of this process's embedded Ray and remove its temp dir.

    ``graceful`` first asks Ray to shut down (what an interpreter exit does); otherwise the
    processes are killed at once, for a process about to ``os._exit``.
    """
    global _session
    session = _session
    if session is None or session.pid != os.getpid():
        return
    _session = None
    if graceful:
        try:
            import ray

            ray.shutdown()
        except Exception as exc:
            log.debug("ray.shutdown: %s", exc)
    _kill_session(session.temp_dir, timeout)
    shutil.rmtree(session.temp_dir, ignore_errors=True)
    os.close(session.lock_fd)


def session_processes(temp_dir: str) -> list[int]:
    """Pids of the processes started for the embedded session in ``temp_dir`` (not this one):
    those that inherited its marker, and those running in it (the raylet starts its agents
    with an environment of their own, but in its own directory, which is ``temp_dir``)."""
    marker = f"{SESSION_ENV}={temp_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if cwd == temp_dir or cwd.startswith(temp_dir + "/"):
                found.append(int(entry))
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == b"Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # a child of ours: reap it
        return False
    return True


def _kill_session(temp_dir: str, timeout: float) -> None:
    if not os.path.isdir("/proc"):
        return
    pids = session_processes(temp_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in pids if _alive(p)]
    if left:
        log.warning("embedded Ray processes %s still alive after %.0f s", left, timeout)


def sweep_stale_sessions() -> list[str]:
    """Remove what killed runners left: their embedded Ray's processes and temp dirs.

    A session is stale when no process holds its owner lock (a flock, released by the kernel
    when its owner dies, whatever pid namespace it ran in). Returns the dirs removed.
    """
    removed = []
    root = _temp_root()
    try:
        names = [n for n in os.listdir(root) if n.startswith(_SESSION_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        lock_path = os.path.join(path, _OWNER_LOCK)
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue  # not a session dir (or not ours to touch)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live runner's session
            _kill_session(path, timeout=10.0)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
