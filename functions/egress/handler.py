"""Egress Lambda: a placeholder that gives the egress function its role (the one role that reads
the identity maps) until the delivery work of issue 17 replaces this handler.

It sends nothing: every event is refused, so that no delivery is ever reported done by it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.observability import logger


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    raise NotImplementedError("egress delivers nothing yet (issue 17: destinations and deliveries)")
