"""monitord: health checks, a ring time-series store, Prometheus rules and notifications."""

from __future__ import annotations

__version__ = "0.1.0"
