"""MLflow helpers: one run per job execution, named ``<job>-<run_date>``, with lineage tags.

The tracking store is contacted before any table is written, so a store that is down fails the
job early with a clear message. With ``mlflow.required: false`` the job goes on untracked instead,
and says so in its log and in the tables' lineage (run id ``untracked-...``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from shoprec.config import Config, flatten

log = logging.getLogger(__name__)

MLFLOW_PARAM_LIMIT = 6000


class StageClock:
    """Wall-clock seconds per stage of a run, logged as ``seconds_<stage>`` metrics."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[f"seconds_{stage}"] = round(now - self._last, 3)
        self._last = now


def defined_metrics(metrics: dict[str, float | None]) -> dict[str, float]:
    """``metrics`` without the undefined ones (None, or NaN such as a one-class set's AUC), which
    are left out rather than logged as NaN."""
    return {k: v for k, v in metrics.items() if v is not None and v == v}


class TrackingError(RuntimeError):
    """The MLflow tracking store could not be reached or written."""


class JobRun:
    """The tracking handle a job writes its params, metrics and artifacts through."""

    def __init__(self, run_id: str, tracked: bool):
        self.run_id = run_id
        self.tracked = tracked

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.tracked:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.tracked:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Any, artifact_file: str) -> None:
        if self.tracked:
            import mlflow

            mlflow.log_text(json.dumps(data, indent=1, sort_keys=True, default=str), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.tracked:
            import mlflow

            mlflow.log_text(text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        """Log a matplotlib figure as an image artifact."""
        if self.tracked:
            import mlflow

            mlflow.log_figure(figure, artifact_file)

    def log_child_run(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> str | None:
        """Record one trial (a hyperparameter point, a compared model) as a nested run; its run id."""
        if not self.tracked:
            return None
        import mlflow

        # Without the parent's experiment id MLflow would file the child under the default experiment.
        parent = mlflow.active_run()
        with mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id) as child:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.set_tag("shoprec.parent_run_id", self.run_id)
            return child.info.run_id


def wait_for_server(uri: str, timeout_seconds: float) -> None:
    """Return once the tracking server at ``uri`` answers its health check; raise after the timeout.

    MLflow's own client retries a refused connection for minutes; a job should say sooner.
    """
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=min(10.0, timeout_seconds)):
                return
        except (urllib.error.URLError, OSError) as err:
            if time.monotonic() >= deadline:
                raise TrackingError(f"no answer from {uri}/health within {timeout_seconds:g} s ({err})") from err
        time.sleep(1.0)


def _prepare_store(cfg: Config) -> str:
    """Point MLflow at the configured store and return the experiment id, creating it if needed."""
    import mlflow

    uri = cfg.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        wait_for_server(uri, cfg.mlflow.connect_timeout_seconds)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = cfg.mlflow.artifact_location
    if location and "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).as_uri()
    return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location or None)


@contextlib.contextmanager
def job_run(cfg: Config, job: str, run_date: str, extra_params: dict[str, Any] | None = None) -> Iterator[JobRun]:
    """Open the MLflow run of one job execution.

    Args:
        cfg: the job's config; flattened into the run's params.
        job: the job name (``clean_events``, ...).
        run_date: the logical date the job runs for (``YYYY-MM-DD``).
        extra_params: job arguments beyond the config (flags, date ranges).

    Yields:
        A :class:`JobRun`; its ``run_id`` goes into the lineage of every table the job writes.

    Raises:
        TrackingError: the store is unreachable and ``mlflow.required`` is true.
    """
    import mlflow

    try:
        experiment_id = _prepare_store(cfg)
        active = mlflow.start_run(experiment_id=experiment_id, run_name=f"{job}-{run_date}")
    except Exception as err:  # any failure to reach the store is the same problem for the user
        if cfg.mlflow.required:
            raise TrackingError(
                f"MLflow tracking store {cfg.mlflow.tracking_uri} is not usable ({type(err).__name__}: {err}). "
                "Start it, fix mlflow.tracking_uri, or set mlflow.required: false to run untracked."
            ) from err
        log.warning("MLflow is not usable (%s); %s runs untracked", err, job)
        active = None
    if active is None:
        yield JobRun(f"untracked-{uuid.uuid4().hex}", tracked=False)
        return

    status = "FAILED"
    try:
        params = {**flatten(cfg), **{f"args.{k}": str(v) for k, v in (extra_params or {}).items()}}
        mlflow.log_params({k: v[:MLFLOW_PARAM_LIMIT] for k, v in params.items()})
        mlflow.set_tags({"shoprec.job": job, "shoprec.run_date": run_date})
        yield JobRun(active.info.run_id, tracked=True)
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def write_report(run: JobRun, report: dict, name: str) -> str:
    """Log a report as JSON and Markdown artifacts; return the Markdown text."""
    markdown = render_markdown(report)
    run.log_dict(report, f"{name}.json")
    run.log_text(markdown, f"{name}.md")
    return markdown


def render_markdown(report: dict, level: int = 1) -> str:
    """A readable Markdown rendering of a nested report dict."""
    lines: list[str] = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{'#' * (level + 1)} {key}\n")
            if value and all(not isinstance(v, (dict, list)) for v in value.values()):
                lines.append("| key | value |\n|---|---|")
                lines.extend(f"| {k} | {v} |" for k, v in value.items())
                lines.append("")
            else:
                lines.append(render_markdown(value, level + 1))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{'#' * (level + 1)} {key}\n")
            columns = list(value[0])
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines.extend("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in value)
            lines.append("")
        else:
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines) + "\n"
