"""What every PynamoDB writer needs to tell: did a write fail on its condition, or on something else."""

from __future__ import annotations

from pynamodb.exceptions import DeleteError, PutError, UpdateError


def refused_by_condition(error: PutError | UpdateError | DeleteError) -> bool:
    """Whether a write failed on its condition (anything else is the caller's to re-raise)."""
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"
