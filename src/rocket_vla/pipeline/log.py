"""The progress log of the demo's and the study's stages."""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]


def stamped_log(tag: str) -> Log:
    """A log that prints each message as a time-stamped line on stdout, tagged ``[tag HH:MM:SS]``."""

    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    return log


#: The default log of the shared stages.
print_log = stamped_log("rocket")
