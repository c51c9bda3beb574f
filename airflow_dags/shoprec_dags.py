"""The shoprec DAGs: ``shoprec_daily`` (incremental) and ``shoprec_weekly_retrain`` (full retrain).

shoprec_daily: raw_input_landed >> clean_events >> build_profiles >> [train_als, mine_rules]
>> build_training_set >> train_ranker >> score >> [search_rerank, evaluate]. The logical date
``{{ ds }}`` is every job's ``--run-date``; one run at a time, each day after the previous one
(the jobs are incremental).

shoprec_weekly_retrain: build_profiles --full-rebuild >> [train_als, mine_rules]
>> build_training_set >> train_ranker >> score >> evaluate, for the week's last day. It does not
clean: the daily DAG keeps ``events_clean`` current.

Every job runs as ``spark-submit --deploy-mode client`` through ``SparkSubmitOperator`` on the
Airflow connection ``spark_shoprec`` (its host is the master: ``yarn``, ``k8s://...``,
``spark://host:7077`` or ``local[*]``; ``spark-submit`` must be on the worker's PATH). Paths come
from Airflow Variables, rendered at run time:

- ``shoprec_home``: the directory ``make package`` built (``dist/``: ``jobs/``, ``shoprec.zip``,
  ``conf/``), on the Airflow worker;
- ``shoprec_conf``: the config file in ``<shoprec_home>/conf`` (default ``cluster.yaml``);
- ``shoprec_input_path``: where the raw logs land (the config's ``input.path``);
- ``shoprec_input_day_glob``: the files of one landing day under it (default ``dt=<ds>/*``).

The driver's own JVM settings must be on the spark-submit command line (the driver JVM is running
before the job reads its config): ``shoprec_driver_memory`` (default ``4g``) and
``shoprec_driver_java_options`` (default ``-Xss16m -XX:-DontCompileHugeMethods -XX:+UseParallelGC``,
as conf/local.yaml: the stack deep query plans need, and, for when the driver runs the tasks as
with a ``local[N]`` master, JIT for Spark's long generated methods and the throughput collector).
Other Spark settings (executor memory, the Python of a shipped environment, ...) belong in the
config file's ``spark.conf`` or the connection.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG

SPARK_CONNECTION = "spark_shoprec"
HOME = "{{ var.value.shoprec_home }}"
CONF = "{{ var.value.get('shoprec_conf', 'cluster.yaml') }}"
RUN_DATE = "{{ ds }}"
DRIVER_CONF = {
    "spark.driver.memory": "{{ var.value.get('shoprec_driver_memory', '4g') }}",
    "spark.driver.extraJavaOptions": "{{ var.value.get('shoprec_driver_java_options', '-Xss16m -XX:-DontCompileHugeMethods -XX:+UseParallelGC') }}",
}

DEFAULT_ARGS = {
    "owner": "shoprec",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=10),
    "retry_exponential_backoff": True,
}


def spark_job(job: str, *extra_args: str, **overrides) -> SparkSubmitOperator:
    """The task that runs ``jobs/<job>.py`` for the run's logical date."""
    return SparkSubmitOperator(
        task_id=job,
        conn_id=SPARK_CONNECTION,
        deploy_mode="client",
        application=f"{HOME}/jobs/{job}.py",
        py_files=f"{HOME}/shoprec.zip",
        files=f"{HOME}/conf/base.yaml,{HOME}/conf/{CONF}",
        application_args=["--conf", f"{HOME}/conf/{CONF}", "--run-date", RUN_DATE, *extra_args],
        name=f"shoprec-{job}-{RUN_DATE}",
        conf=dict(DRIVER_CONF),
        **overrides,
    )


def raw_input_landed(**overrides) -> FileSensor:
    """Waits (rescheduling, not holding a worker slot) until the day's raw files exist."""
    return FileSensor(
        task_id="raw_input_landed",
        filepath="{{ var.value.shoprec_input_path }}/"
                 "{{ var.value.get('shoprec_input_day_glob', 'dt=' ~ ds ~ '/*') }}",
        fs_conn_id="fs_default",
        mode="reschedule",
        poke_interval=600,
        timeout=12 * 3600,
        **overrides,
    )


def train_and_score(*profile_args: str):
    """build_profiles >> [train_als, mine_rules] >> build_training_set >> train_ranker >> score,
    inside the current DAG; the first and the last task."""
    profiles = spark_job("build_profiles", *profile_args)
    score = spark_job("score")
    profiles >> [spark_job("train_als"), spark_job("mine_rules")] >> spark_job("build_training_set") \
        >> spark_job("train_ranker") >> score
    return profiles, score


def shoprec_dag(dag_id: str, description: str, schedule: str, **default_args) -> DAG:
    """A shoprec DAG: one run at a time, no catch-up of missed intervals by default."""
    return DAG(dag_id=dag_id, description=description, schedule=schedule,
               start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
               default_args={**DEFAULT_ARGS, **default_args}, tags=["shoprec"])


with shoprec_dag("shoprec_daily", "shoprec: clean, profile, train and score one day", "@daily",
                 depends_on_past=True) as daily:
    first, scored = train_and_score()
    raw_input_landed() >> spark_job("clean_events") >> first
    scored >> [spark_job("search_rerank"), spark_job("evaluate")]

with shoprec_dag("shoprec_weekly_retrain", "shoprec: full rebuild of profiles and models", "@weekly") as weekly:
    first, scored = train_and_score("--full-rebuild")
    scored >> spark_job("evaluate")
