"""GPU worker: the container entry point of a Batch job (functions/gpu_worker/Dockerfile).

It polls the GPU queue until idle (docs/gpu.md); SIGTERM (scale-in, spot reclaim) makes it stop
taking work and hand its unstarted messages back to the queue.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from voxelpipe.gpu.service import worker_from_environment
from voxelpipe.observability import logger


def main() -> int:
    worker = worker_from_environment()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        logger.info("SIGTERM: stopping", extra={"worker": worker.name})
        # Not in the handler itself: it interrupts the main thread, which may hold the worker's lock.
        threading.Thread(target=worker.stop, name="sigterm").start()

    signal.signal(signal.SIGTERM, on_sigterm)
    summary = worker.run()
    return 0 if summary.exit_reason in ("idle", "stopped", "lifetime") else 1


if __name__ == "__main__":
    sys.exit(main())
