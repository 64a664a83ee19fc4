"""Stop rules: whether a round's winner is kept, and when growth ends.

A rule is a function (winner's row, kept network's row, metric, min_delta) -> (keep the winner?, stop reason or
None); register it in STOP_RULES under the name that `GrowConfig.stop` (and the parameter `stop`) uses. Limits
that apply to every rule (max_rounds, max_params) are checked by the loop.
"""
from __future__ import annotations

from typing import Callable

Row = dict
StopRule = Callable[[Row, Row, str, float], tuple[bool, str | None]]


def no_improvement(winner: Row, kept: Row, metric: str, min_delta: float) -> tuple[bool, str | None]:
    """The paper: keep the winner if it lowers the metric by more than min_delta, else stop."""
    if winner[metric] < kept[metric] - min_delta:
        return True, None
    return False, (f"validation loss stopped falling (best candidate's {metric} {winner[metric]:.4f} "
                   f">= {kept[metric]:.4f} - {min_delta})")


def fixed_rounds(winner: Row, kept: Row, metric: str, min_delta: float) -> tuple[bool, str | None]:
    """Keep every round's winner; growth ends at max_rounds (or max_params), as in the round-robin ablation."""
    return True, None


STOP_RULES: dict[str, StopRule] = {"no-improvement": no_improvement, "fixed-rounds": fixed_rounds}
