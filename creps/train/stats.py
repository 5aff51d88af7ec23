"""Training statistics: values reported during a tick, reduced to means at the tick's end.

Values stay on the device until `collect()` so that reporting never synchronises.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional

import torch


class StatsCollector:
    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._sqsums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._scalars: dict[str, list[float]] = defaultdict(list)

    def report(self, name: str, value: torch.Tensor) -> None:
        """Add every element of `value` to the running mean of `name`."""
        v = value.detach().float().flatten()
        if v.numel() == 0:
            return
        total, sq = v.sum(), v.square().sum()
        if name in self._sums:
            self._sums[name] = self._sums[name] + total
            self._sqsums[name] = self._sqsums[name] + sq
        else:
            self._sums[name], self._sqsums[name] = total, sq
        self._counts[name] += v.numel()

    def report_scalar(self, name: str, value: float) -> None:
        """Record a host-side number (timings, memory) for this tick."""
        self._scalars[name].append(float(value))

    def collect(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, dict[str, float]]:
        """{name: {num, mean, std}} of everything reported since the last call; resets.

        `reduce` sums a tensor over processes (data-parallel training): every rank must
        call collect at the same point, having reported the same names.
        """
        out: dict[str, dict[str, float]] = {}
        names = sorted(self._sums)
        if names:
            table = torch.stack([torch.stack([self._sums[k].double(), self._sqsums[k].double(),
                                              torch.tensor(float(self._counts[k]), dtype=torch.float64,
                                                           device=self._sums[k].device)]) for k in names])
            if reduce is not None:
                table = reduce(table)
            for name, (total, sq, n) in zip(names, table.tolist()):
                mean = total / n
                var = max(sq / n - mean * mean, 0.0)
                out[name] = {"num": int(n), "mean": mean, "std": var**0.5}
        for name, values in self._scalars.items():
            mean = sum(values) / len(values)
            var = max(sum(v * v for v in values) / len(values) - mean * mean, 0.0)
            out[name] = {"num": len(values), "mean": mean, "std": var**0.5}
        self._sums.clear()
        self._sqsums.clear()
        self._counts.clear()
        self._scalars.clear()
        return dict(sorted(out.items()))
