"""The A/B/C method for what a callback costs a training step, shared by ``overhead.py`` and
``gpu/callback_overhead.py``: rounds of three arms timed in one run, without the callback (A),
with it (B) and without it again (C, a control), in an order that rotates from round to round
(ABC, BCA, CAB, ...). Per round the overhead ratio is B over the mean of A and C, and the control
ratio C over A shows how much two identical arms differ on the machine (its noise floor).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

ARMS = ("A", "B", "C")


def alternate(
    seconds_per_step: Callable[[bool], float],
    rounds: int,
    *,
    deadline: float | None = None,
    min_rounds: int = 3,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``rounds`` rounds of the three arms; ``seconds_per_step(with_callback)`` times one
    arm. With a ``deadline`` (``time.perf_counter()`` seconds), a round that would end after it
    is not started, once ``min_rounds`` are done. ``on_round(i, row)`` sees each round."""
    done: list[dict[str, Any]] = []
    round_s = 0.0
    for i in range(rounds):
        if deadline is not None and i >= min_rounds and time.perf_counter() + round_s > deadline:
            break
        started = time.perf_counter()
        order = ARMS[i % 3:] + ARMS[:i % 3]
        timed = {arm: seconds_per_step(arm == "B") for arm in order}
        round_s = time.perf_counter() - started
        row = {"order": "".join(order), "a_s": timed["A"], "b_s": timed["B"], "c_s": timed["C"],
               "ratio": timed["B"] / ((timed["A"] + timed["C"]) / 2),
               "control_ratio": timed["C"] / timed["A"]}
        done.append(row)
        if on_round is not None:
            on_round(i, row)
    return done


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max (a single value is all five)."""
    if len(values) < 2:
        only = values[0]
        return {"median": only, "q1": only, "q3": only, "min": only, "max": only}
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def spread_row(values: dict[str, float], digits: int = 4) -> str:
    """``median | q1 to q3 | min | max``, for a Markdown table row."""
    f = f".{digits}f"
    return (f"{values['median']:{f}} | {values['q1']:{f}} to {values['q3']:{f}} | "
            f"{values['min']:{f}} | {values['max']:{f}}")
