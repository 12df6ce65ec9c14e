"""The run or logged model a permission check read less than a second ago, kept for the next check.

MLflow's auth app decides on a run or a logged model from its experiment alone (``run.info.experiment_id``,
``model.experiment_id``, and whether it exists; the contract test pins that it reads nothing else),
and neither ever moves to another experiment. So the row one check read answers the next checks
on the same worker: a stock-client registration checks its run three times and its logged model
five, and on PostgreSQL each read is a round trip. What can change within the interval is only
whether the row still exists: a logged model deleted less than ``interval`` ago may still be decided on from
its experiment, and the handler then answers that it does not exist, as it would had the delete
come just after the check. Nothing else is kept: a missing row is read again every time (no
refusal is cached), and the interval is never longer than the cache TTL (0 keeps nothing).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_ROWS = 4096


class RecentRows:
    def __init__(
        self, interval: float, clock: Callable[[], float] = time.monotonic, max_rows: int = MAX_ROWS
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_rows = max_rows
        self._rows: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()  # key -> (read at, row)
        self._lock = threading.Lock()

    def read(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """The row ``read()`` returned for ``key`` less than ``interval`` ago, else ``read()`` now; an
        error (a missing row) passes through and is not kept."""
        if self.interval <= 0:
            return read()
        now = self._clock()
        with self._lock:
            kept = self._rows.get(key)
            if kept is not None and now - kept[0] < self.interval:
                self._rows.move_to_end(key)
                return kept[1]
        row = read()
        with self._lock:
            self._rows[key] = (now, row)
            self._rows.move_to_end(key)
            while len(self._rows) > self._max_rows:
                self._rows.popitem(last=False)
        return row
