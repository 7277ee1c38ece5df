"""The wall-clock budget of a run (``train.max_minutes``): when to stop so that the end of the run still fits.

The clock is a dependency (``time.monotonic`` by default): tests drive a fake one, so no outcome depends on the
machine's speed. The reserve kept for the end of the run is computed in one place, :func:`final_reserve_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds from an arbitrary origin, never going backwards (``time.monotonic``)."""


def final_reserve_s(validation_s: Callable[[], float], checkpoint_s: float, validate_at_end: bool) -> float:
    """Seconds the end of a run needs: the last checkpoint, plus the final validation when ``validation.at_end``
    (``validation_s`` is called only then: estimating a validation runs the generator)."""
    return (validation_s() if validate_at_end else 0.0) + checkpoint_s


@dataclass
class TimeBudget:
    """``seconds`` of wall clock counted from ``started`` on ``clock`` (``seconds`` 0: no budget), less the
    seconds :meth:`exclude` took off (validations, with ``train.budget_excludes_validation``)."""

    seconds: float
    started: float
    clock: Clock = time.monotonic
    excluded_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def elapsed(self) -> float:
        """Seconds since ``started`` that count against the budget."""
        return self.clock() - self.started - self.excluded_s

    def exclude(self, seconds: float) -> None:
        """Take ``seconds`` of work just done (a validation) off the budget's count."""
        self.excluded_s += max(0.0, seconds)

    def exceeded(self, upcoming: float, reserve: float) -> bool:
        """True when ``upcoming`` seconds of work now would leave less than ``reserve`` seconds of the budget."""
        return self.enabled and self.elapsed() + upcoming + reserve > self.seconds

    def used(self, reserve: float) -> float:
        """Fraction in [0, 1] of the training time (the budget less ``reserve``) used so far; 0 without a budget."""
        if not self.enabled:
            return 0.0
        return min(1.0, max(0.0, self.elapsed() / max(self.seconds - reserve, 1e-6)))

    def steps_left(self, reserve: float, step_s: float) -> int:
        """Steps of ``step_s`` seconds that still fit before ``reserve`` (0 without a budget or a step time)."""
        if not self.enabled or step_s <= 0:
            return 0
        return int(max(0.0, self.seconds - reserve - self.elapsed()) / step_s)
