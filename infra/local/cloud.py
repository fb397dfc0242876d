"""The local cloud: moto in process, running the synthesized stack with the real handlers.

Every Lambda invocation moto makes — from an S3 notification, an SQS event-source mapping or a
state machine task — passes through `LambdaFunction.invoke`; the local cloud replaces that one
method with a call of the function's Python handler in this process. Step Functions executes
the definition taken from the synthesized template, with only ARNs substituted.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Any
from unittest import mock

import boto3
import botocore.loaders
import botocore.session
from botocore.credentials import Credentials
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from infra.local.deploy import GPU_WORKER, REGION, Deployment, deploy_template
from infra.local.iam import LocalIam
from infra.local.lambda_runtime import Handler, LambdaContext, call_handler
from infra.local.processes import POOLED_FUNCTIONS, ProcessSettings, WorkerCall, WorkerPool
from infra.local.schedules import BatchSweep, TransferSweep
from infra.local.template import cached_template
from infra.local.workers import LocalGpuWorkers
from voxelpipe.function_specs import function_spec
from voxelpipe.wiring import EnvVar

log = logging.getLogger("voxelpipe.local")

# Settings only the local cloud needs: fake credentials for moto, and no X-Ray daemon to send to.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    # EMF metrics are printed to stdout, which the CLI keeps for its own output.
    "POWERTOOLS_METRICS_DISABLED": "true",
}


@cache
def _service_models() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """botocore's `create_loader`, answering the default search path with the process's one loader."""
    if search_path_string is None:
        return _service_models()
    return botocore.loaders.create_loader(search_path_string)


def _session() -> boto3.Session:
    """A boto3 session whose botocore service models (JSON, ~0.4 s to decode the dozen a cloud's
    clients need) are decoded once per process, not once per local cloud."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _service_models())
    return boto3.Session(botocore_session=core)


@dataclass(frozen=True)
class Invocation:
    function: str  # the FunctionSpec name
    event: Any
    error: str | None
    duration_ms: float
    process_id: int  # the process that ran the handler: the cloud's, or a worker's (-1: one that died)


class LocalCloud:
    """`with LocalCloud() as cloud:` — the whole stack in moto, handlers in process."""

    def __init__(
        self,
        template: dict[str, Any] | None = None,
        *,
        env: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        processes: ProcessSettings | None = None,
    ) -> None:
        """`env` overrides the functions' environment here: local-only settings, such as a quieter
        POWERTOOLS_LOG_LEVEL for the demo or development-token auth for `voxelpipe serve`.
        `credentials` replace moto's fake keys for every client in the process (moto accepts any):
        `voxelpipe serve` signs presigned URLs with keys nobody else knows. `processes`: how many
        worker processes run the analyses (infra/local/processes.py; default from the environment:
        one a CPU)."""
        self.template = template if template is not None else cached_template()
        self.env_overrides = dict(env or {})
        self.credentials = credentials
        self.process_settings = processes if processes is not None else ProcessSettings.from_env()
        self.workers: WorkerPool | None = None
        self._host_env: dict[str, str] = {}
        self._executions_done = True
        self.deployment = Deployment()
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._handlers: dict[str, Handler] = {}
        self._overrides: dict[str, Handler] = {}
        self._worker_overrides: dict[str, str] = {}
        self.gpu_workers: LocalGpuWorkers | None = None
        self.iam = LocalIam()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalCloud:
        self._host_env = dict(os.environ)  # what a worker process starts from, before the cloud's
        # Every botocore session here, moto's own included (it makes one for each region lookup,
        # and decoded endpoints.json each time: ~0.8 s of a cloud's start), shares one loader.
        self._stack.enter_context(mock.patch.object(botocore.session, "create_loader", _shared_loader))
        # Imported here, under that loader: moto's state machine interpreter brings in its EC2 backend.
        from infra.local.moto_fixes import moto_fixes

        self._stack.enter_context(mock.patch.dict(os.environ, LOCAL_ENV))
        self._stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        if self.credentials is not None:  # after mock_aws, which sets its own fake keys
            os.environ["AWS_ACCESS_KEY_ID"] = self.credentials.access_key
            os.environ["AWS_SECRET_ACCESS_KEY"] = self.credentials.secret_key
            if self.credentials.token:
                os.environ["AWS_SESSION_TOKEN"] = self.credentials.token
            else:  # long-term keys: no session token to sign with
                os.environ.pop("AWS_SESSION_TOKEN", None)
        # mock_aws leaves boto3 without a default session; this one, made once the credentials
        # are in place, reads botocore's service models through one loader kept across clouds.
        boto3.DEFAULT_SESSION = _session()
        self._stack.enter_context(moto_fixes())
        self._stack.enter_context(mock.patch.object(LambdaFunction, "invoke", self._moto_invoke_hook()))
        self._stack.enter_context(self.iam)
        if self.process_settings.processes > 0:
            # Worker processes start with the first invocation that needs them, forked from a fork
            # server warmed now, while the cloud deploys; they are closed before moto goes.
            self.workers = WorkerPool(self.process_settings.processes, self.process_settings.analysis_threads)
            self.workers.warm()
            self._stack.callback(self._close_workers)
        self.deployment = deploy_template(self.template)
        self.iam.token_owner = self.state_machine_arn
        os.environ.update(self.function_environment())
        os.environ.update(self.env_overrides)
        # The functions' logger reads POWERTOOLS_LOG_LEVEL when first imported (in Lambda, after
        # the environment is set); where this process imported it before, apply the level now.
        observability = sys.modules.get("voxelpipe.observability")
        if observability is not None and os.environ.get("POWERTOOLS_LOG_LEVEL"):
            observability.logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])
        # GPU workers run as threads here (infra/local/workers.py), started as the GPU queue fills.
        if GPU_WORKER in self.deployment.function_env:
            self.gpu_workers = LocalGpuWorkers.from_deployment(self.deployment)
            self.gpu_workers.start()
            self._stack.callback(self.gpu_workers.stop)  # on exit, before moto goes
        # Network DICOM exams complete on a schedule (infra/local/schedules.py).
        self.transfer_sweep = TransferSweep(self.env(EnvVar.TRANSFERS_TABLE), self.invoke)
        self.transfer_sweep.start()
        self._stack.callback(self.transfer_sweep.stop)
        # Bulk reprocess batches advance on a schedule too.
        self.batch_sweep = BatchSweep(self.env(EnvVar.BATCHES_TABLE), self.invoke)
        self.batch_sweep.start()
        self._stack.callback(self.batch_sweep.stop)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._executions_done = False
        try:
            self._executions_done = self.wait_for_executions()
        finally:
            self._stack.close()

    def _close_workers(self) -> None:
        if self.workers is not None:
            # After a timeout some execution may still be in a worker: don't wait for it.
            self.workers.close(wait=self._executions_done)

    def wait_for_executions(self, timeout_s: float = 60) -> bool:
        """Wait until no execution is running, so none outlives moto; False on timeout."""
        client = boto3.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = [
                arn
                for arn in self.deployment.state_machine_arns
                if client.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]
            ]
            if not running:
                return True
            time.sleep(0.05)
        log.warning("executions still running when the local cloud stopped")
        return False

    def function_environment(self) -> dict[str, str]:
        """The union of every function's environment (one process hosts them all).

        A variable set to different values for two functions would make that impossible, so
        it is refused.
        """
        merged: dict[str, str] = {}
        for spec, env in self.deployment.function_env.items():
            for key, value in env.items():
                if merged.setdefault(key, value) != value:
                    raise ValueError(
                        f"{key} differs between functions ({spec}): the local cloud cannot host both"
                    )
        return merged

    # -- resources ---------------------------------------------------------------------------
    def env(self, var: EnvVar) -> str:
        return os.environ[var]

    @property
    def bucket(self) -> str:
        return self.env(EnvVar.BUCKET)

    @property
    def state_machine_arn(self) -> str:
        (arn,) = self.deployment.state_machine_arns
        return arn

    # -- invocation --------------------------------------------------------------------------
    @contextmanager
    def override(self, function: str, handler: Handler) -> Iterator[None]:
        """Run `handler` in place of a function's own (fault injection in tests), in this process."""
        self._overrides[function] = handler
        try:
            yield
        finally:
            del self._overrides[function]

    @contextmanager
    def override_in_worker(self, function: str, handler: str) -> Iterator[None]:
        """Run the handler named `handler` ("module.attribute", importable by a worker) in place of a
        pooled function's own, in a worker process (tests of what happens there)."""
        if function not in POOLED_FUNCTIONS or self.workers is None:
            raise ValueError(f"{function} does not run in worker processes here")
        self._worker_overrides[function] = handler
        try:
            yield
        finally:
            del self._worker_overrides[function]

    def handler(self, function: str) -> Handler:
        if function in self._overrides:
            return self._overrides[function]
        if function not in self._handlers:
            spec = function_spec(function)
            module_name, attribute = spec.handler.rsplit(".", 1)
            module = importlib.import_module(f"functions.{spec.name}.{module_name}")
            self._handlers[function] = getattr(module, attribute)
        return self._handlers[function]

    def acting_as(self, function: str) -> AbstractContextManager[None]:
        """Calls made meanwhile are the function's: held to its role's policies (infra/local/iam.py)."""
        return self.iam.acting_as(function, self.deployment.statements_of(function))

    def invoke(self, function: str, event: Any) -> tuple[Any, str | None]:
        """Call a function's handler as Lambda would: returns (payload, error type or None)."""
        spec = function_spec(function)
        started = time.perf_counter()
        if self._runs_in_worker(function):
            payload, error, process_id = self._invoke_in_worker(function, event)
        else:
            context = LambdaContext(
                function_name=function, memory_limit_in_mb=spec.memory_mb, timeout_s=spec.timeout_s
            )
            with self.acting_as(function):
                payload, error = call_handler(self.handler(function), event, context)
            process_id = os.getpid()
        if error is not None:
            log.warning("%s failed: %s: %s", function, error, payload.get("errorMessage"))
        with self._lock:
            self.invocations.append(
                Invocation(function, event, error, (time.perf_counter() - started) * 1000, process_id)
            )
        return payload, error

    def _runs_in_worker(self, function: str) -> bool:
        if self.workers is None or function not in POOLED_FUNCTIONS:
            return False
        return function in self._worker_overrides or function not in self._overrides

    def _invoke_in_worker(self, function: str, event: Any) -> tuple[Any, str | None, int]:
        assert self.workers is not None
        spec = function_spec(function)
        env = {**self._host_env, **LOCAL_ENV, **self.deployment.function_env[function], **self.env_overrides}
        call = WorkerCall(
            function=function,
            handler=self._worker_overrides.get(function) or f"functions.{spec.name}.{spec.handler}",
            event=event,
            env=self.workers.worker_env(env),
            statements=self.deployment.statements_of(function),
            token_owner=self.iam.token_owner,
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
        )
        answer = self.workers.answer_for(call)
        for denial in answer.denials:  # refused in the worker: recorded here, where tests look
            self.iam.record(denial)
        return answer.payload, answer.error, answer.process_id

    def _moto_invoke_hook(self) -> Callable[..., bytes]:
        cloud = self

        def invoke(fn: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> bytes:
            function = cloud.deployment.function_specs[fn.function_name]
            payload, error = cloud.invoke(function, json.loads(body) if body else {})
            if error is not None:
                response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(payload).encode()

        return invoke
