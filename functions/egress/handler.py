"""Egress Lambda: the delivery queue -> each study's outputs sent to its destinations.

Two kinds of message: a study's Study Status Changed event (an EventBridge rule sends those of
COMPLETED studies here), which plans the study's deliveries, and a delivery message, which sends
one delivery's unacknowledged objects. A failed send backs off (its message hidden longer at
each receive) and is retried; after the last receive the delivery is FAILED and the message goes
to the dead-letter queue (docs/deliveries.md).
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.adapters import event_bus, queues
from voxelpipe.adapters.deliveries import DynamoDeliveries, SqsDeliveryQueue
from voxelpipe.adapters.destination_secrets import SecretsManagerDestinationSecrets
from voxelpipe.adapters.destinations import DynamoDestinations
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.reidentification import BrokerReidentifier
from voxelpipe.adapters.senders import sender_for
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.pipeline.deliveries import DeliveryAdapters, handle_delivery_message
from voxelpipe.wiring import EnvVar
from voxelpipe.workflow_settings import DELIVERY_MAX_RECEIVE_COUNT

# A failed delivery is reported as a batch item failure (its message comes back), not as an error
# of the invocation, also when it is the batch's only record.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def adapters() -> DeliveryAdapters:
    return DeliveryAdapters(
        store=DynamoStudyStore(),
        storage=Storage.from_environment(),
        destinations=DynamoDestinations(),
        secrets=SecretsManagerDestinationSecrets(),
        deliveries=DynamoDeliveries(),
        queue=SqsDeliveryQueue(),
        make_sender=sender_for,
        reidentify=BrokerReidentifier(DynamoIdentityMaps()),
        publish=event_bus.publish,
    )


def handle_record(record: SQSRecord) -> str:
    return handle_delivery_message(
        json.loads(record.body),
        adapters(),
        receive_count=int(record.attributes.approximate_receive_count),
        max_receive_count=DELIVERY_MAX_RECEIVE_COUNT,
        retry_later=partial(queues.delay_retry, os.environ[EnvVar.DELIVERY_QUEUE_URL], record.receipt_handle),
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
