"""Temporal smoothing of PHNet's statistics across video frames.

PHNet's forward pass takes a ``stats_hook(name, stats) -> stats``: every PN block and
the PFE show it the statistics they are about to use and continue with what it
returns. :class:`EMAStatistics` keeps an exponential moving average of them, so the
colour correction of a live video drifts smoothly instead of flickering with noise.
"""

from __future__ import annotations

from torch import Tensor


class EMAStatistics:
    """An exponential moving average of the statistics a forward pass reads.

    ``smoothing`` is the weight of the past: 0 passes every frame's own statistics
    through unchanged; 0.9 moves 10% of the way toward each new frame. Statistics whose
    shape changes (a new working resolution) restart from the new frame.
    """

    def __init__(self, smoothing: float = 0.8):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.state: dict[str, dict[str, Tensor]] = {}

    def reset(self) -> None:
        """Forget all earlier frames."""
        self.state.clear()

    def __call__(self, name: str, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        previous = self.state.get(name)
        if previous is None or any(previous[k].shape != v.shape for k, v in stats.items()):
            smoothed = {k: v.detach() for k, v in stats.items()}
        else:
            a = self.smoothing
            smoothed = {k: a * previous[k] + (1 - a) * v.detach() for k, v in stats.items()}
        self.state[name] = smoothed
        return smoothed
