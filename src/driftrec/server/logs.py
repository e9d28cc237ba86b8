"""The service's log configuration: uvicorn's, plus driftrec's own lines through the same handler.

The access log stays a write per line. Writing lines in batches (one write a second) was measured and
dropped: it bought ~4 % of computed recommendations' throughput on reads alone, but with a tenth of requests
being clicks the p99 rose from ~100-140 ms to 300-500 ms (docs/benchmarks.md) — the per-line write is also
where the event loop lets go of the GIL, which the worker threads (store writes, index catch-up) then get
without waiting out the interpreter's 5 ms switch interval.
"""

from __future__ import annotations

import copy
from typing import Any


def serve_logging() -> dict[str, Any]:
    """uvicorn's logging configuration, plus driftrec's own INFO lines (index fits and saves, answers
    reused) through the same handler: driftrec's log lines name users only by pseudonym."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["driftrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
