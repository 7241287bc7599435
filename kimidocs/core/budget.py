"""The run's spending cap: no call starts once spent + in-flight estimates would pass it.

Thread-safe, because the calls of a run go out from several worker threads at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


class BudgetExceeded(Exception):
    """Starting this call would take the run past `max_cost_usd`; the document is skipped."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one call holds of the budget until it is settled; `id` names it in a shared ledger."""

    usd: float
    id: str = ""


@dataclass
class _Totals:
    spent: float = 0.0
    in_flight: float = 0.0


class CostGuard:
    """Reserve an estimate before a call, settle it with the real cost after."""

    def __init__(self, max_cost_usd: float | None) -> None:
        self.max_cost_usd = max_cost_usd
        self._lock = threading.Lock()
        self._t = _Totals()

    @property
    def spent(self) -> float:
        with self._lock:
            return self._t.spent

    def reserve(self, estimate_usd: float) -> Reservation:
        """Hold `estimate_usd` for a call about to start, or raise `BudgetExceeded`."""
        with self._lock:
            if self.max_cost_usd is not None:
                projected = self._t.spent + self._t.in_flight + estimate_usd
                if projected > self.max_cost_usd:
                    raise BudgetExceeded(
                        f"budget: spent ${self._t.spent:.4f} + in flight ${self._t.in_flight:.4f} "
                        f"+ this call ${estimate_usd:.4f} would pass max_cost_usd ${self.max_cost_usd:.4f}"
                    )
            self._t.in_flight += estimate_usd
        return Reservation(estimate_usd)

    def settle(self, held: Reservation | None, actual_usd: float) -> None:
        """Replace a reservation by what the call really cost (0 if it failed unbilled); `held` None:
        a cost that had no reservation of its own (an attempt cut mid-stream, a batch line served)."""
        with self._lock:
            if held is not None:
                self._t.in_flight = max(self._t.in_flight - held.usd, 0.0)
            self._t.spent += actual_usd
