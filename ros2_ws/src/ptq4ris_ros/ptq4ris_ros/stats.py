"""Frame counters and latency percentiles for the node's diagnostics."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np


class FrameStats:
    def __init__(self, window: int = 500):
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.skipped = self.commands = self.commands_unsure = 0
        self._latency = deque(maxlen=window)  # arrival → publication, ms
        self._engine = deque(maxlen=window)  # segment() alone, ms

    def count(self, name: str, n: int = 1):
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def done(self, latency_ms: float, engine_ms: float):
        with self._lock:
            self.processed += 1
            self._latency.append(latency_ms)
            self._engine.append(engine_ms)

    def snapshot(self) -> dict:
        with self._lock:
            lat, eng = np.array(self._latency or [np.nan]), np.array(self._engine or [np.nan])
            return {"received": self.received, "processed": self.processed, "dropped": self.dropped,
                    "rejected": self.rejected, "skipped": self.skipped, "commands": self.commands, "commands_unsure": self.commands_unsure,
                    "latency_p50_ms": float(np.nanpercentile(lat, 50)) if self._latency else None,
                    "latency_p90_ms": float(np.nanpercentile(lat, 90)) if self._latency else None,
                    "latency_p99_ms": float(np.nanpercentile(lat, 99)) if self._latency else None,
                    "engine_p50_ms": float(np.nanpercentile(eng, 50)) if self._engine else None}
