"""Named crash points for durability tests, in the manner of database failpoints.

``DRIFTREC_FAILPOINT=<name>`` makes the process SIGKILL itself when it reaches ``hit(<name>)``: no
cleanup, no atexit, exactly like a power cut at that line. Unset (always, outside tests) it costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("DRIFTREC_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
