"""train_ranker: the deep ranker trained data-parallel with Horovod on the Spark executors.

Run on a cluster (after build_training_set for the same date)::

    spark-submit --master yarn --deploy-mode client --num-executors 2 --executor-cores 1 \\
        --py-files dist/shoprec.zip --files conf/base.yaml,conf/cluster.yaml \\
        jobs/train_ranker.py --conf cluster.yaml --run-date 2026-01-07 [--resume]

``horovod.spark.run`` starts ``ranker.workers`` training processes in Spark tasks (the cluster
needs that many free task slots); they find each other through Gloo. Each reads its own shards
of ``training_set/run_date=D``; see :mod:`shoprec.models.ranker.train` for the recipe. Rank 0
logs each epoch's train/validation loss and AUC to this job's MLflow run and checkpoints to
``ranker.models_root/<run_date>/checkpoints``; the job then logs the best model with the
mlflow.tensorflow flavour, registers it as a new version of ``ranker.registered_model``, and logs
the learning curves as a plot. When build_training_set wrote the date's search examples
(``search_training_set``), the search ranker is then trained on them the same way (each search's
matches one list), saved to ``ranker.models_root/search_ranker/<run_date>``, logged to the same run
(metrics and artifacts prefixed ``search_``) and registered as ``search.registered_model``. Its
validation nDCG@10 is compared with the text order's on the same searches (metric
``search_reference_val_ndcg``): only a model that beats it is served by search_rerank
(``validation.json`` beside the model, metric ``search_served``).

Failures: a worker that dies makes Horovod abort the others, and ``horovod.spark.run`` raises;
the job fails with that message rather than hanging. Workers that cannot all start within
``ranker.start_timeout_seconds`` (too few free slots) fail the job the same way. To resume after a
failure, rerun with ``--resume``: training continues from the last checkpoint of that run date
(model, optimizer, history and early-stopping state); finished epochs are not trained again.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from pyspark.sql import SparkSession

from shoprec.config import Config
from shoprec.jobs.build_training_set import FEATURE_SPEC, SEARCH_TRAINING_SET, TRAINING_SET
from shoprec.jobs.common import job_parser, run_main
from shoprec.models.ranker.train import TrainSettings, local_path, train_each
from shoprec.tracking import JobRun, defined_metrics, job_run

JOB = "train_ranker"

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """A Horovod worker failed or could not start; the message says which and why."""


def settings_for(cfg: Config, run_date: str, run_id: str | None, resume: bool, training_set: str | None = None,
                 out: str | None = None, metric_prefix: str = "") -> TrainSettings:
    """The training settings of this run, from the ``ranker`` config section."""
    ranker = cfg.ranker
    return TrainSettings(
        training_set=training_set or f"{cfg.table_path(TRAINING_SET)}/run_date={run_date}",
        out=out or f"{ranker.models_root.rstrip('/')}/ranker/{run_date}", metric_prefix=metric_prefix,
        epochs=ranker.epochs, batch_size=ranker.batch_size, learning_rate=ranker.learning_rate,
        patience=ranker.patience, loss=ranker.loss, early_stopping=ranker.early_stopping,
        embedding_dim=ranker.embedding_dim, cross_layers=ranker.cross_layers, hidden_units=list(ranker.hidden_units), dropout=ranker.dropout, seed=ranker.seed, resume=resume,
        mlflow_tracking_uri=cfg.mlflow.tracking_uri if run_id else None, mlflow_run_id=run_id)


def plot_learning_curves(history: list[dict]):
    """Loss and AUC per epoch (training and validation), and the validation's per-user nDCG@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    for axes, metric in ((left, "loss"), (middle, "auc")):
        axes.plot(epochs, [h[f"train_{metric}"] for h in history], marker="o", label="train")
        axes.plot(epochs, [h[f"val_{metric}"] for h in history], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    # Histories saved before the metric existed (a --resume across versions) have no nDCG.
    right.plot(epochs, [h.get("val_ndcg", float("nan")) for h in history], marker="o", label="validation")
    right.set_xlabel("epoch")
    right.set_title("nDCG@10 per user")
    right.legend()
    figure.tight_layout()
    return figure


def ranker_signature(model):
    """The model's MLflow signature: one named tensor per Keras input, the score per example out.

    With it, ``mlflow.pyfunc`` loaders know the inputs' names, types and shapes (a dict of
    arrays: an int32 id per categorical feature and the float32 ``dense`` vector).
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(tensor, name=None):
        shape = tuple(-1 if d is None else int(d) for d in tensor.shape)
        return TensorSpec(np.dtype(tensor.dtype.as_numpy_dtype), shape, name)

    inputs = Schema([spec(model.input[name], name) for name in sorted(model.input)])
    return ModelSignature(inputs=inputs, outputs=Schema([spec(model.output)]))


def log_ranker(result: dict, registered_model: str, tracking: JobRun, name: str = "ranker_model") -> str | None:
    """Log the saved model as ``name`` with the TensorFlow flavour and its signature, and register
    a new version of ``registered_model``; the version."""
    if not tracking.tracked:
        return None
    import mlflow
    import tensorflow as tf

    model = tf.keras.models.load_model(result["model_path"], compile=False)
    info = mlflow.tensorflow.log_model(model, name=name, signature=ranker_signature(model),
                                       registered_model_name=registered_model)
    return str(info.registered_model_version) if info.registered_model_version is not None else None


def train_on_spark(cfg: Config, *settings: TrainSettings) -> list[dict]:
    """Run :func:`~shoprec.models.ranker.train.train_each` on ``ranker.workers`` Horovod processes
    in Spark tasks: each of ``settings`` trained in turn by the same workers (one start-up for
    all); rank 0's results, in that order. Raises :class:`TrainingFailed` when a worker fails or
    cannot start."""
    import horovod.spark

    try:
        results = horovod.spark.run(train_each, args=(list(settings),), num_proc=cfg.ranker.workers,
                                    start_timeout=cfg.ranker.start_timeout_seconds, use_gloo=True, verbose=1)
    except Exception as err:
        raise TrainingFailed(
            f"Horovod training with {cfg.ranker.workers} workers failed ({type(err).__name__}: {err}). "
            f"Checkpoints are in {' and '.join(f'{s.out}/checkpoints' for s in settings)}; fix the cause and "
            f"rerun with --resume.") from err
    return next(r for r in results if r is not None)


# Beside a saved search ranker: its validation nDCG, the text order's, and whether it is served.
SEARCH_VALIDATION = "validation.json"


def search_verdict(result: dict) -> dict:
    """Whether a trained search ranker is to be served: only when its nDCG@10 on the validation
    searches beats the text order's on the same searches (the order its training set names as
    ``reference_order``). One that cannot be compared (no reference order, or no validation search
    followed up) is served, as it would be without this check."""
    model, reference = result["best_val_ndcg"], result.get("reference_val_ndcg", float("nan"))
    served = reference != reference or model > reference  # a NaN reference: nothing to compare with
    return {"best_val_ndcg": model, "reference_val_ndcg": reference, "served": bool(served)}


def search_model_root(cfg: Config, run_date: str) -> str:
    """Where the search ranker trained for ``run_date`` is saved."""
    return f"{cfg.ranker.models_root.rstrip('/')}/search_ranker/{run_date}"


def log_training(tracking: JobRun, result: dict, settings: TrainSettings, spec_path: Path, registered_model: str,
                 prefix: str = "") -> None:
    """A trained model's summary metrics, history, learning curves and feature spec into the job's
    run (names prefixed with ``prefix``), and the model logged and registered as ``registered_model``."""
    history = result["history"]
    tracking.log_metrics(defined_metrics({f"{prefix}{k}": v for k, v in {
        "best_val_auc": result["best_val_auc"], "best_val_ndcg": result["best_val_ndcg"],
        "reference_val_ndcg": result.get("reference_val_ndcg"), "best_epoch": result["best_epoch"],
        "epochs_run": len(history),
        "workers": result["ranks"], "examples_per_rank": result["examples_per_rank"]}.items()}))
    tracking.log_dict({"settings": asdict(settings), "history": history}, f"{prefix}training.json")
    tracking.log_figure(plot_learning_curves(history), f"{prefix}learning_curves.png")
    tracking.log_text(spec_path.read_text(), f"{prefix}feature_spec.json")
    version = log_ranker(result, registered_model, tracking, name=f"{prefix}ranker_model")
    if version:
        tracking.set_tags({f"shoprec.registered_{prefix}model": f"{registered_model}/{version}"})


def run(spark: SparkSession, cfg: Config, run_date: str, resume: bool = False) -> dict:
    """Train the ranker, and the search ranker when the date has search examples, on
    ``ranker.workers`` Horovod processes in Spark tasks; log and register the models."""
    training_set = Path(f"{cfg.table_path(TRAINING_SET)}/run_date={run_date}")
    if not (training_set / FEATURE_SPEC).exists():
        raise FileNotFoundError(f"{training_set} has no {FEATURE_SPEC}; run build_training_set for {run_date} first")
    search_set = Path(f"{cfg.table_path(SEARCH_TRAINING_SET)}/run_date={run_date}")
    searchable = cfg.search.learned and (search_set / FEATURE_SPEC).exists()
    with job_run(cfg, JOB, run_date, extra_params={"run_date": run_date, "resume": resume}) as tracking:
        run_id = tracking.run_id if tracking.tracked else None
        settings = [settings_for(cfg, run_date, run_id, resume)]
        if searchable:
            out = search_model_root(cfg, run_date)
            # A failure during the ranker's training leaves the search ranker no checkpoint to resume from.
            settings.append(settings_for(cfg, run_date, run_id, resume and (Path(out) / "checkpoints").is_dir(),
                                         str(search_set), out, metric_prefix="search_"))
        else:
            log.info("train_ranker %s: no search examples at %s; no search ranker", run_date, search_set)
        results = train_on_spark(cfg, *settings)
        result = results[0]
        log_training(tracking, result, settings[0], training_set / FEATURE_SPEC, cfg.ranker.registered_model)
        log.info("train_ranker %s: epoch %s kept (validation AUC %.4f, nDCG@10 %.4f, early stopping on %s) of %d "
                 "on %d workers", run_date, result["best_epoch"], result["best_val_auc"], result["best_val_ndcg"],
                 settings[0].early_stopping, len(result["history"]), result["ranks"])
        search = None
        if searchable:
            search = results[1]
            verdict = search_verdict(search)
            (local_path(settings[1].out) / SEARCH_VALIDATION).write_text(json.dumps(verdict, indent=1))
            log_training(tracking, search, settings[1], search_set / FEATURE_SPEC, cfg.search.registered_model,
                         prefix="search_")
            tracking.log_metrics({"search_served": int(verdict["served"])})
            log.info("train_ranker %s: search ranker epoch %s kept (validation AUC %.4f, nDCG@10 per search %.4f; "
                     "the text order %.4f): %s", run_date, search["best_epoch"], search["best_val_auc"],
                     search["best_val_ndcg"], verdict["reference_val_ndcg"],
                     "served" if verdict["served"] else "not served: search_rerank serves the text order")
            search = {k: v for k, v in search.items() if k != "settings"} | {"served": verdict["served"]}
        return {**{k: v for k, v in result.items() if k != "settings"}, "search": search}


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit jobs/train_ranker.py`` and ``shoprec run train_ranker``."""
    parser = job_parser(JOB, "Train the ranker with Horovod on the Spark executors.")
    parser.add_argument("--resume", action="store_true", help="continue from the run date's last checkpoint")

    def execute(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
        result = run(spark, cfg, args.run_date, resume=args.resume)
        print(f"train_ranker {args.run_date}: " + json.dumps({"best_epoch": result["best_epoch"],
                                                             "best_val_auc": result["best_val_auc"],
                                                             "best_val_ndcg": result["best_val_ndcg"],
                                                             "epochs": len(result["history"]),
                                                             "search_best_val_ndcg": (result["search"] or {}).get(
                                                                 "best_val_ndcg")}))

    return run_main(JOB, parser, execute, argv)
