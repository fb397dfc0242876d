"""The workflow's timings and retries, defined once: the stack builds from them, the reaper's
deadlines derive from them, the local cloud runs the template they shaped."""

from __future__ import annotations

from voxelpipe.function_specs import DISPATCH, EGRESS, LIVE_PUSH, WEBHOOK

# SQS settings (DESIGN: visibility >= 6x the consumer's timeout, >= 5 receives before the DLQ).
QUEUE_VISIBILITY_TIMEOUT_S = 6 * DISPATCH.timeout_s
QUEUE_MAX_RECEIVE_COUNT = 5
DISPATCH_BATCH_SIZE = 10
# Concurrent dispatch invocations for the low priority (bulk reprocess) queue (Lambda's minimum: 2).
LOW_PRIORITY_DISPATCH_CONCURRENCY = 2

# Step Functions: errors a Lambda task retries (everything else goes to MarkFailed).
TRANSIENT_LAMBDA_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
)
# How many analyses of one study run at once.
ANALYSIS_CONCURRENCY = 4


# How often the reaper runs, and how many studies of each status it looks at per run.
REAPER_INTERVAL_MIN = 5
# How often network DICOM exams are checked for completion (pipeline/transfers.py): a tenant's
# quiet period is honoured to within this. (The local cloud checks every second.)
TRANSFER_SWEEP_INTERVAL_MIN = 1
# How often bulk reprocess batches are advanced (pipeline/batches.py): each run opens up to a batch's
# throttle less its studies in flight. (The local cloud advances them every second.)
BATCH_SWEEP_INTERVAL_MIN = 1
REAPER_BATCH = 50
# The webhook queue: >= 5 receives before its DLQ, visibility >= 6x the webhook function's timeout.
WEBHOOK_MAX_RECEIVE_COUNT = 8
WEBHOOK_VISIBILITY_TIMEOUT_S = 6 * WEBHOOK.timeout_s
WEBHOOK_BATCH_SIZE = 10
# The delivery queue (docs/deliveries.md): a failed send backs off (deliveries.retry_delay_s, 1 min
# doubling to 1 h) for DELIVERY_MAX_RECEIVE_COUNT receives (about 2 h in all), then its delivery is
# FAILED and the message goes to the DLQ. One delivery per invocation: each is long.
DELIVERY_MAX_RECEIVE_COUNT = 8
DELIVERY_VISIBILITY_TIMEOUT_S = 6 * EGRESS.timeout_s
DELIVERY_BATCH_SIZE = 1
# The live queue (status and step changes to the push function): >= 5 receives before its DLQ.
LIVE_MAX_RECEIVE_COUNT = 5
LIVE_VISIBILITY_TIMEOUT_S = 6 * LIVE_PUSH.timeout_s
LIVE_BATCH_SIZE = 10

# Lambda tasks of the state machine: each try is bounded by the function's timeout plus this margin
# (the task timeout), and transient errors retry RETRY_ATTEMPTS times, RETRY_INTERVAL_S apart,
# doubling (RETRY_BACKOFF).
TASK_TIMEOUT_MARGIN_S = 30
RETRY_INTERVAL_S = 2
RETRY_ATTEMPTS = 3
RETRY_BACKOFF = 2.0
# The longest one execution (one study attempt) may run.
STATE_MACHINE_TIMEOUT_S = 6 * 3600
# S3 invokes ingest asynchronously: one try and this many retries by Lambda, about 1 and 2 minutes
# apart (INGEST_RETRY_DELAYS_S in all), then the event goes to the IngestFailures queue.
INGEST_ASYNC_RETRIES = 2
INGEST_RETRY_DELAYS_S = 180


def task_timeout_s(function_timeout_s: int) -> int:
    """A Lambda task's timeout in the state machine: the function's own, plus the margin."""
    return function_timeout_s + TASK_TIMEOUT_MARGIN_S


def retry_backoff_total_s() -> float:
    """The seconds a Lambda task waits between its tries, all retries taken."""
    return sum(RETRY_INTERVAL_S * RETRY_BACKOFF**n for n in range(RETRY_ATTEMPTS))
