"""Compare recommenders on the same held-out users: a long table of metrics, and plots of it."""

from __future__ import annotations

from pyspark.sql import DataFrame

from shoprec import schemas as S
from shoprec.evaluation.ranking import beyond_accuracy_metrics, beyond_accuracy_reference, ranking_metrics_at
from shoprec.spark import CacheScope

METRIC_ROW = ("model", "metric", "k", "value")


def compare_recommenders(recommendations: dict[str, DataFrame], truth: DataFrame, training: DataFrame,
                         catalogue: DataFrame, k: int, ks: list[int]) -> list[dict]:
    """Accuracy at every cut-off in ``ks`` and ``k``, and beyond-accuracy at ``k``, per model.

    Every model is averaged over the same users — all users in ``truth`` — so a model that cannot
    serve a user scores zero for that user; ``users_served`` says how many it could serve.

    Args:
        recommendations: model name -> ``(user_id, item_id, rank)`` rows, at least ``max(ks + [k])`` deep.
        truth: held-out ``(user_id, item_id)``.
        training: ``(user_id, item_id)`` the models learned from (for novelty).
        catalogue: ``(item_id, category)`` (for coverage and diversity).

    Returns:
        Rows ``{"model", "metric", "k", "value"}``; metric is one of precision, recall, ndcg, map,
        hit_rate, coverage, diversity, novelty, users_served.
    """
    rows: list[dict] = []
    with CacheScope() as shared:
        # The same for every model: the catalogue's size and categories, the training items' popularity.
        reference = beyond_accuracy_reference(catalogue, training, shared)
        for model, recs in recommendations.items():
            with CacheScope() as scope:
                recs = scope.cache(recs)   # read several times below
                for cut, metrics in ranking_metrics_at(recs, truth, [*ks, k], require_recommendations=False).items():
                    rows += [{"model": model, "metric": name.split("@")[0], "k": cut, "value": float(value)}
                             for name, value in metrics.items() if name != "users"]
                for name, value in beyond_accuracy_metrics(recs, k, reference=reference).items():
                    rows.append({"model": model, "metric": name.split("@")[0], "k": k, "value": float(value)})
                # A held-out user is served when the model recommended anything to them at all.
                served = truth.select(S.USER_ID).distinct().join(recs.select(S.USER_ID).distinct(), S.USER_ID).count()
                rows.append({"model": model, "metric": "users_served", "k": k, "value": float(served)})
    return rows


def comparison_table(rows: list[dict], k: int) -> list[dict]:
    """One row per model with every metric at ``k`` as columns (for reports)."""
    table: dict[str, dict] = {}
    for row in rows:
        if row["k"] == k:
            table.setdefault(row["model"], {"model": row["model"]})[f"{row['metric']}@{k}"] = round(row["value"], 5)
    return list(table.values())


def plot_metric_bars(rows: list[dict], k: int):
    """A figure with one bar group per metric at ``k`` and one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = ["precision", "recall", "ndcg", "map", "hit_rate", "coverage", "diversity"]
    models = sorted({r["model"] for r in rows})
    values = {(r["model"], r["metric"]): r["value"] for r in rows if r["k"] == k}
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        axes.bar(np.arange(len(metrics)) + i * width, [values.get((model, m), 0.0) for m in metrics], width, label=model)
    axes.set_xticks(np.arange(len(metrics)) + width * (len(models) - 1) / 2, [f"{m}@{k}" for m in metrics])
    axes.set_ylabel("value")
    axes.set_title(f"Recommenders on the held-out window (K={k})")
    axes.legend()
    figure.tight_layout()
    return figure


def plot_precision_recall(rows: list[dict]):
    """Precision and recall against K, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in sorted({r["model"] for r in rows}):
        for axes, metric in ((left, "precision"), (right, "recall")):
            points = sorted((r["k"], r["value"]) for r in rows if r["model"] == model and r["metric"] == metric)
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
            axes.set_xlabel("K")
            axes.set_ylabel(metric)
            axes.set_title(f"{metric}@K")
    right.legend()
    figure.tight_layout()
    return figure
