"""How a long-running process sets Python's cyclic garbage collector, once everything is loaded."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Young, middle and old generation thresholds for batch work; CPython's default is (700, 10, 10).
BATCH_THRESHOLDS = (50_000, 20, 100)


def settle_collector(serves_requests: bool = False) -> None:
    """Freeze what is loaded by now (modules, classes, settings: it lives as long as the process) out
    of the collector's sight, so its full passes stop walking it.

    A process that only works through batches also collects its young generation less often: a batch
    holds thousands of objects until it ends, and at the default threshold the collector passed over
    them many times per batch, while reference counting frees nearly all of them. Rarer passes are
    longer ones, so a process that answers requests keeps the default (bench/RESULTS.md)."""
    gc.freeze()
    if not serves_requests:
        gc.set_threshold(*BATCH_THRESHOLDS)


@contextlib.contextmanager
def batch_collection() -> Iterator[None]:
    """The batch thresholds for a while (the bench's in-process baselines), then the ones before."""
    before = gc.get_threshold()
    gc.set_threshold(*BATCH_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
