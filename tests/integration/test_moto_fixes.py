"""moto as the local cloud runs it: concurrent calls from several executions' threads stay correct."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from infra.local.cloud import LOCAL_ENV
from infra.local.moto_fixes import moto_fixes
from voxelpipe.adapters.storage import Storage

BUCKET = "race"
THREADS = 4
ROUNDS = 40
OBJECTS = 5


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    for key, value in LOCAL_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws(), moto_fixes():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield Storage(BUCKET)


def test_executions_deleting_their_own_prefixes_at_once_all_succeed(storage: Storage):
    # What two DICOM Prepares do at the same time: each lists the versions under its own upload
    # prefix and deletes them. moto's listing walks every key of the bucket; a key another thread
    # removed meanwhile made it fail with "TypeError: 'NoneType' object is not iterable" (a DICOM
    # study FAILED in Prepare once in a batch of 40 concurrent uploads).
    for number in range(50):  # other studies' objects: a longer walk, a wider window
        storage.write(f"derived/other/{number}.bin", bytes(1024))
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def churn(worker: int) -> None:
        start.wait()
        try:
            for round_ in range(ROUNDS):
                prefix = f"uploads/demo/study{worker}-{round_}/"
                for number in range(OBJECTS):
                    storage.write(f"{prefix}im{number}.dcm", b"DICM")
                assert storage.delete_all_versions(prefix) == OBJECTS
        except BaseException as error:  # reported from the test thread below
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(worker,)) for worker in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert storage.list_keys("uploads/") == []


class _ReceivedMeanwhile:
    """A pending message whose group another thread's receive_message adds a message beside,
    just as this thread reads it: the interleaving a walk of the live pending set cannot survive."""

    def __init__(self, pending: set[object]) -> None:
        self.pending = pending

    @property
    def group_id(self) -> str | None:
        self.pending.add(object())
        return None


def test_sqs_walks_a_copy_of_its_pending_messages_while_other_threads_receive(storage: Storage):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    boto3.client("sqs").create_queue(QueueName="webhooks")
    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_queue("webhooks")
    queue._pending_messages.add(_ReceivedMeanwhile(queue._pending_messages))
    assert queue.pending_message_groups == set()  # RuntimeError: Set changed size during iteration
