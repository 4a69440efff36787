"""The cyclic garbage collector in a long-lived process: what start-up built out of its sight, and a young
threshold fit for a server.

``gc.freeze()`` moves every object alive now (modules, clients, the runtime: ~160-230k of them) to the
permanent generation, so full collections stop re-traversing them. The first generation's threshold
(``GATEWAY_GC_THRESHOLD``, Python's own is 700) decides how often young collections run: in a server they find
next to no garbage but traverse the objects of every request in flight, 4-18% of the CPU per request
(docs/benchmarks.md, "Young collections"); at 20,000 they nearly stop, and a cycle of garbage is still
collected within that many net allocations.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived(young_threshold: int) -> Iterator[None]:
    """Freeze what exists and set the young threshold (the older generations keep theirs); both undone on exit."""
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(young_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
