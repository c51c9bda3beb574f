"""The time-based held-out window shop recommenders are tuned and compared on.

Everything a recommender may learn from happens before the cut-off; what users went on to do
in the window ``[cut-off, run date]`` is the truth. Nothing from the window leaks into training.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoprec import schemas as S
from shoprec.etl import profiles as P


@dataclass
class Holdout:
    """A split of the events known on a run date at a cut-off."""

    cutoff: str
    train_events: DataFrame
    train_interactions: DataFrame
    truth: DataFrame


def cutoff_date(run_date: str, window_days: int) -> str:
    """The first day of the held-out window: the run date's last ``window_days`` days are held out."""
    return (dt.date.fromisoformat(run_date) - dt.timedelta(days=window_days - 1)).isoformat()


def time_holdout(events: DataFrame, run_date: str, window_days: int, relevant_types: list[str],
                 weights: dict[str, float], half_life_days: float) -> Holdout:
    """Split events at the start of the last ``window_days`` days before (and including) ``run_date``.

    Args:
        events: clean events known on the run date.
        relevant_types: event types in the window that count as relevant (for example cart, purchase).

    Returns:
        A :class:`Holdout`: training events (before the cut-off), their interactions measured at
        the cut-off, and truth ``(user_id, item_id)`` of relevant window events by users with
        training history; items a user already had before the cut-off stay in the truth only if
        they are relevant again.
    """
    cutoff = cutoff_date(run_date, window_days)
    boundary = F.lit(cutoff).cast("timestamp")
    before = events.where(F.col(S.EVENT_TIME) < boundary)
    window = events.where((F.col(S.EVENT_TIME) >= boundary) & (F.col(S.EVENT_DATE) <= F.lit(run_date).cast("date")))
    interactions = P.build_interactions(before, weights, half_life_days,
                                        dt.datetime.combine(dt.date.fromisoformat(cutoff), dt.time()))
    truth = (window.where(F.col(S.EVENT_TYPE).isin(*relevant_types) & F.col(S.ITEM_ID).isNotNull())
             .select(S.USER_ID, S.ITEM_ID).distinct()
             .join(interactions.select(S.USER_ID).distinct(), S.USER_ID))
    return Holdout(cutoff, before, interactions, truth)


def exclusions(interactions: DataFrame, mode: str) -> DataFrame | None:
    """The (user, item) pairs a recommender must not return: ``purchased`` items, everything
    ``seen``, or nothing (``none``)."""
    if mode == "none":
        return None
    pairs = interactions if mode == "seen" else interactions.where(F.col("n_purchase") > 0)
    return pairs.select(S.USER_ID, S.ITEM_ID)
