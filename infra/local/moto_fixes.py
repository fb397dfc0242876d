"""Where moto 5.2.5 departs from AWS in a way the pipeline would notice, put right for the local cloud.

- `SendTaskFailure` drops its `cause` in moto's request handler (its backend takes one): the
  state machine's Catch would see no cause, and a failed study no message. Patched to pass it on.
- The task-token calls (and the map-run ones) look through executions whose interpreter has
  already let go of its environment (one ending meanwhile, or a finished one for SendTaskFailure)
  and fail with an AttributeError, which AWS never answers: such executions hold no token, so
  they are left out of the search.
- moto's DynamoDB applies a conditional write in steps (read the item, check the condition, write)
  with nothing held between them, so two threads can both pass a condition that only one of them
  may pass in DynamoDB (two concurrent reprocess calls both opened attempt 2; two arrivals counted
  once). Every item operation of its backend runs under one lock here, as DynamoDB's are atomic.
- moto's S3 keeps a bucket's objects in a `_VersionedKeyStore` (name -> its versions) whose
  iterators copy the names, then look each one up again: an object whose last version another
  thread deleted in between comes back as `None` from `lists()` (ListObjectVersions then fails
  with "TypeError: 'NoneType' object is not iterable") and raises KeyError from `items()` and
  `values()` (ListObjects). Executions run in threads here, and a DICOM Prepare lists the versions
  under its upload prefix while another deletes its own: one study in a few dozen concurrent ones
  FAILED in Prepare. Here they iterate one snapshot of the names with their versions, as S3 lists
  what the bucket held at one moment.
- moto's SQS queue names its pending (in-flight) message groups by walking its pending set, which
  `receive_message` and `delete_message` in other threads change meanwhile: the walk failed with
  "RuntimeError: Set changed size during iteration" (seen in bench/soak.py: a status-change event
  was not published, its webhook queue being read by another thread). Here it walks a copy.

And changes that only save time in the cloud's process, which every study's AWS calls go through:
- moto's EventBridge fills each target's input by parsing every input path with
  `jsonpath_ng.ext.parse`, which builds its grammar's parser tables anew each call (~12 ms an
  event, a third of a status change's cost here). The local cloud parses each distinct path once.
- moto's server finds the service of every request by listing moto's package folder on disk
  (some 150 `isdir` calls a request: 5% of the cloud's process under worker processes' calls).
  The list is read once.
- moto's state machine interpreter makes a new boto3 client (SSL context, endpoint rules) for
  every Lambda or SQS task it runs; clients are thread-safe and its settings never change, so one
  per (region, service) serves them all.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import jsonpath_ng.ext
import moto.backends
from jsonpath_ng.ext.parser import parse as parse_json_path
from moto.backends import list_of_moto_modules
from moto.core.models import botocore_stubber
from moto.core.responses import ActionResult, EmptyResult
from moto.dynamodb.models import DynamoDBBackend
from moto.s3.utils import _VersionedKeyStore
from moto.sqs.models import Queue
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from moto.stepfunctions.responses import StepFunctionResponse

_get_executions = StepFunctionsParserBackend._get_executions
_SFN_PARSER = "moto.stepfunctions.parser"


@functools.cache
def _moto_modules() -> tuple[str, ...]:
    return tuple(list_of_moto_modules())


@functools.cache
def _cached_boto_client(region: str, service: str, intercepting: bool) -> Any:
    return boto_client_for(region, service)


def _shared_boto_client(region: str, service: str, state_credentials: Any = None) -> Any:
    # The original ignores the credentials too (it signs with fixed ones).
    return _cached_boto_client(region, service, botocore_stubber.enabled)


def _executions_with_environment(self: StepFunctionsParserBackend, execution_status: Any = None) -> list[Any]:
    return [
        execution
        for execution in _get_executions(self, execution_status)
        if getattr(getattr(execution, "exec_worker", None), "env", None) is not None
    ]


def _send_task_failure(self: StepFunctionResponse) -> ActionResult:
    # The backend that executes state machines (moto's parser backend) takes the cause.
    self.stepfunction_backend.send_task_failure(  # type: ignore[call-arg]
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


# The DynamoDB backend's item operations: each reads and writes items, and must be atomic.
_DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "get_item",
    "query",
    "scan",
    "update_item",
    "delete_item",
    "transact_write_items",
    "transact_get_items",
    "batch_get_item",
)
_dynamodb_lock = threading.RLock()


def _atomic(operation: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(operation)
    def atomic(*args: Any, **kwargs: Any) -> Any:
        with _dynamodb_lock:
            return operation(*args, **kwargs)

    return atomic


def _versions(store: _VersionedKeyStore) -> Iterator[tuple[str, list[Any]]]:
    """Each object's name and versions, from one copy of the store taken at once (dict(...) copies
    in C, under the GIL: no other thread's change lands halfway)."""
    for name, versions in dict.items(dict(store)):
        if versions:
            yield name, versions


def _store_lists(self: _VersionedKeyStore) -> Iterator[tuple[str, list[Any]]]:
    return _versions(self)


def _store_items(self: _VersionedKeyStore) -> Iterator[tuple[str, Any]]:
    return ((name, versions[-1]) for name, versions in _versions(self))


def _store_values(self: _VersionedKeyStore) -> Iterator[Any]:
    return (versions[-1] for _, versions in _versions(self))


def _pending_message_groups(self: Queue) -> set[str]:
    # set.copy runs in C, under the GIL: no other thread's receive or delete lands halfway.
    return {message.group_id for message in self._pending_messages.copy() if message.group_id is not None}


_parse_json_path = functools.cache(parse_json_path)  # parsed paths are only read (find) after


@contextmanager
def moto_fixes() -> Iterator[None]:
    with ExitStack() as fixes:
        fixes.enter_context(mock.patch.object(StepFunctionResponse, "send_task_failure", _send_task_failure))
        fixes.enter_context(
            mock.patch.object(StepFunctionsParserBackend, "_get_executions", _executions_with_environment)
        )
        for name in _DYNAMODB_ITEM_OPERATIONS:
            if hasattr(DynamoDBBackend, name):
                fixes.enter_context(
                    mock.patch.object(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))
                )
        # The store binds each iterator under two names (lists = iterlists = _iterlists, ...).
        fixes.enter_context(
            mock.patch.multiple(
                _VersionedKeyStore,
                lists=_store_lists,
                iterlists=_store_lists,
                items=_store_items,
                iteritems=_store_items,
                values=_store_values,
                itervalues=_store_values,
            )
        )
        fixes.enter_context(
            mock.patch.object(Queue, "pending_message_groups", property(_pending_message_groups))
        )
        fixes.enter_context(mock.patch.object(jsonpath_ng.ext, "parse", _parse_json_path))
        fixes.enter_context(mock.patch.object(moto.backends, "list_of_moto_modules", _moto_modules))
        for module in [m for name, m in sys.modules.items() if name.startswith(_SFN_PARSER)]:
            if getattr(module, "boto_client_for", None) is boto_client_for:
                fixes.enter_context(mock.patch.object(module, "boto_client_for", _shared_boto_client))
        yield
