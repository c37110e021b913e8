"""How a long-running worker process sets Python's cyclic garbage collector, once everything is loaded."""

from __future__ import annotations

import gc

# Young, middle and old generation thresholds; CPython's default is (700, 10, 10).
THRESHOLDS = (50_000, 20, 100)


def settle_collector() -> None:
    """Freeze what is loaded by now (modules, classes, settings: it lives as long as the process) out
    of the collector's sight, so its full passes stop walking it; and collect the young generation
    less often: a batch holds thousands of objects until it ends, and at the default threshold the
    collector passed over them many times per batch. Reference counting frees nearly all of them;
    the collector only finds cycles (bench/RESULTS.md)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
