"""Pausing Python's cyclic garbage collector while a computation builds millions of small objects.

The metrics core builds rows, events and facts as tuples and dataclasses without reference cycles:
reference counting frees them, and a cyclic collection would only walk them again and again (a
third of a first build's time at a million events).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Run the block with the cyclic collector off; it is on again after (if it was on before)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
