"""Durations as the published logs and metric results write them."""

from __future__ import annotations


def format_time(seconds: float) -> str:
    """'12s', '3m 04s', '2h 05m 09s', '1d 02h 03m' (the published total_time_str and tick time)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {s // 3600 % 24:02d}h {s // 60 % 60:02d}m"
