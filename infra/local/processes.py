"""Worker processes for the local cloud's CPU-heavy functions, so that a study's compute uses every core.

moto, its state and the state machine stay in the cloud's process. An invocation of a pooled
function (`POOLED_FUNCTIONS`) runs in a worker process instead of a thread: the real handler from
`functions/`, imported there by the same name, with its own environment (the spec's, from the
template, plus the local settings), held by the same `LocalIam` to its role's policies. Its AWS
calls reach the cloud's moto over HTTP (`CloudEndpoint`: moto's server app on 127.0.0.1, in the
cloud's process, sharing its backends), so the worker sees the one cloud the in-process functions
see, and what AWS would refuse is refused there too; its denials come back with its answer into
`cloud.iam.denials`.

Why not the other design, the parent doing the AWS I/O and the worker only the compute: it needs a
second, hand-split version of each handler (decode, analysis, encode) and of its IAM story, so the
code that runs would no longer be the Lambda's. Here the worker runs exactly what Lambda runs.

Each of the `size` slots is a `ProcessPoolExecutor` with one process, made when first needed and
reused by later invocations: one invocation a process at a time, as in a Lambda sandbox, and a
process that dies fails only the invocation it was running (`Runtime.ExitError`, as Lambda reports
a crashed runtime), its slot starting a fresh process for the next. Processes are forked from
multiprocessing's fork server (a clean process, never the threaded cloud), which imports the
heavy libraries once (`_PRELOAD`), so a worker starts in milliseconds.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from infra.local.iam import Denial, LocalIam
from infra.local.lambda_runtime import Handler, LambdaContext, call_handler, function_error
from voxelpipe.function_specs import PREPARE, RUN_ANALYSIS
from voxelpipe.thread_budget import THREADS_ENV, affinity_cpus

log = logging.getLogger("voxelpipe.local")

# The functions whose invocations run in worker processes: the analyses (CPU-bound: numpy, torch)
# and Prepare (decoding, reorienting and rendering the upload).
POOLED_FUNCTIONS = frozenset({RUN_ANALYSIS.name, PREPARE.name})

PROCESSES_VAR = "VOXELPIPE_LOCAL_PROCESSES"
ANALYSIS_THREADS_VAR = "VOXELPIPE_LOCAL_ANALYSIS_THREADS"

# Imported by the fork server before it forks any worker: libraries that read no setting of ours
# at import, so every worker (whatever its environment) starts with them loaded.
_PRELOAD = [
    "numpy",
    "nibabel",
    "pydicom",
    "boto3",
    "botocore.session",
    "pynamodb.models",
    "pydantic",
    "aws_lambda_powertools",
    "torch",
]


@dataclass(frozen=True)
class ProcessSettings:
    """`processes`: worker processes (0: every function in the cloud's process, as threads);
    `analysis_threads`: the threads each analysis may use (VOXELPIPE_ANALYSIS_THREADS)."""

    processes: int
    analysis_threads: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessSettings:
        """VOXELPIPE_LOCAL_PROCESSES (default: the CPUs this process may run on) and
        VOXELPIPE_LOCAL_ANALYSIS_THREADS (default 1)."""
        env = os.environ if env is None else env
        return cls(
            processes=int(env.get(PROCESSES_VAR) or affinity_cpus()),
            analysis_threads=int(env.get(ANALYSIS_THREADS_VAR) or 1),
        )

    def __post_init__(self) -> None:
        if self.processes < 0 or self.analysis_threads < 1:
            raise ValueError(
                f"worker processes must be ≥ 0 and analysis threads ≥ 1 "
                f"({PROCESSES_VAR}, {ANALYSIS_THREADS_VAR}): {self.processes}, {self.analysis_threads}"
            )


# -- the worker's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerCall:
    """One invocation, as sent to a worker: everything it needs, nothing of the cloud's process."""

    function: str  # the FunctionSpec name
    handler: str  # "module.attribute", importable in the worker
    event: Any
    env: dict[str, str]  # the function's whole environment
    statements: list[dict[str, Any]]  # its role's policies
    token_owner: str  # the state machine whose task tokens it may answer
    memory_mb: int
    timeout_s: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class WorkerAnswer:
    payload: Any
    error: str | None
    denials: list[Denial]
    process_id: int


_handlers: dict[str, Handler] = {}


def _handler(name: str) -> Handler:
    if name not in _handlers:
        module_name, attribute = name.rsplit(".", 1)
        _handlers[name] = getattr(importlib.import_module(module_name), attribute)
    return _handlers[name]


def _exit_with(cloud_pid: int) -> None:
    """In a new worker: end it once the cloud's process is gone (killed, or ended without closing
    its pool), so that no worker outlives its cloud. It would otherwise wait for work forever."""

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(cloud_pid, 0)
                alive = Path(f"/proc/{cloud_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except (ProcessLookupError, FileNotFoundError):
                alive = False
            if not alive:
                os._exit(0)

    threading.Thread(target=watch, name="watch-cloud", daemon=True).start()


def run_in_worker(call: WorkerCall) -> WorkerAnswer:
    """In the worker process: the handler under the function's environment and role."""
    # One invocation at a time in this process: its environment is the function's, whole.
    os.environ.clear()
    os.environ.update(call.env)
    iam = LocalIam()
    iam.token_owner = call.token_owner
    context = LambdaContext(
        function_name=call.function,
        memory_limit_in_mb=call.memory_mb,
        timeout_s=call.timeout_s,
        aws_request_id=call.request_id,
    )
    with iam, iam.acting_as(call.function, call.statements):
        payload, error = call_handler(_handler(call.handler), call.event, context)
    return WorkerAnswer(payload, error, iam.denials, os.getpid())


# -- the cloud's side ----------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Not every request on stderr (the CLI's); refusals are logged by the app."""


def _requiring_key(app: WSGIApplication, access_key_id: str) -> WSGIApplication:
    """Refuse any request not signed with the workers' key: nothing else on the machine may use
    the cloud (moto's server would answer anyone everything). The key id is made at random for
    each cloud and lives only in its worker processes' environment."""
    credential = f"Credential={access_key_id}/"

    def checked(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if credential not in environ.get("HTTP_AUTHORIZATION", ""):
            log.warning("local cloud endpoint: refused an unsigned or foreign request")
            body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [body]
        return app(environ, start_response)

    return checked


class CloudEndpoint:
    """moto's server app on 127.0.0.1 in the cloud's process: the same backends as the in-process
    mock, for the worker processes, and only for them (`_requiring_key`)."""

    def __init__(self) -> None:
        self.access_key_id = "AKIA" + secrets.token_hex(8).upper()
        self.secret_access_key = secrets.token_urlsafe(30)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        # moto's server module is imported only when a worker first needs it.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        app = _requiring_key(DomainDispatcherApplication(create_backend_app), self.access_key_id)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-endpoint", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()


def _worker_context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


class WorkerCrashed(RuntimeError):
    """The worker process ended while running an invocation (killed, out of memory, a crash in C)."""


class WorkerPool:
    """`size` worker processes, started as invocations need them and reused; closed with the cloud."""

    def __init__(self, size: int, analysis_threads: int) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one process")
        self.size = size
        self.analysis_threads = analysis_threads
        self.endpoint = CloudEndpoint()
        self._idle: queue.Queue[ProcessPoolExecutor | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # a slot whose process is not started yet
        self._executors: list[ProcessPoolExecutor] = []
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self.tasks = 0  # invocations the workers ran (tests and benches read it)

    def warm(self) -> None:
        """Start multiprocessing's fork server now: it imports `_PRELOAD` in its own process, on
        another core, while the cloud deploys; the workers themselves still start when needed."""
        _worker_context()
        multiprocessing.forkserver.ensure_running()

    def worker_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """A function's environment as its worker sees it: the cloud reached over HTTP with the
        workers' own key, and the analyses' thread budget."""
        worker = dict(env)
        worker.pop("AWS_SESSION_TOKEN", None)  # long-term keys: no session token to sign with
        worker.update(
            {
                "AWS_ENDPOINT_URL": self._ensure_endpoint(),
                "AWS_ACCESS_KEY_ID": self.endpoint.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.endpoint.secret_access_key,
                THREADS_ENV: str(self.analysis_threads),  # each analysis' thread budget
            }
        )
        return worker

    def _ensure_endpoint(self) -> str:
        with self._lock:
            if self._closed:
                raise RuntimeError("the local cloud's worker pool is closed")
            if not self._started:
                self.endpoint.start()
                self._started = True
            return self.endpoint.url

    def run(self, call: WorkerCall) -> WorkerAnswer:
        """Run `call` in a free worker (waiting for one while all are busy)."""
        executor = self._idle.get()
        try:
            if executor is None:
                executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=_worker_context(),
                    initializer=_exit_with,
                    initargs=(os.getpid(),),
                )
                with self._lock:
                    self._executors.append(executor)
            answer = executor.submit(run_in_worker, call).result()
            with self._lock:
                self.tasks += 1
            return answer
        except BrokenProcessPool as exc:
            assert executor is not None  # made above: only submit() and result() raise this
            executor.shutdown(wait=False)
            executor = None  # the slot starts a fresh process for the next invocation
            raise WorkerCrashed(
                f"RequestId: {call.request_id} Error: Runtime exited without a response "
                f"(the worker process running {call.function} ended abruptly: {exc})"
            ) from exc
        finally:
            self._idle.put(executor)

    def answer_for(self, call: WorkerCall) -> WorkerAnswer:
        """`run`, with a crashed worker turned into the function error Lambda reports for it."""
        try:
            return self.run(call)
        except WorkerCrashed as crash:
            log.warning("%s", crash)
            error = "Runtime.ExitError"  # what Lambda reports when a runtime dies mid-invocation
            return WorkerAnswer(function_error(error, str(crash), []), error, [], -1)
        except Exception as exc:  # the call or its answer could not cross (pickling): a function error too
            log.warning("%s could not run in a worker: %r", call.function, exc)
            return WorkerAnswer(
                function_error(type(exc).__name__, str(exc), traceback.format_exception(exc)),
                type(exc).__name__,
                [],
                os.getpid(),
            )

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers (after the invocations they are running when `wait`), then the endpoint."""
        with self._lock:
            self._closed = True
            executors = list(self._executors)
        for executor in executors:
            executor.shutdown(wait=wait, cancel_futures=True)
        if self._started:
            self.endpoint.stop()
