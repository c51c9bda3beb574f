# shoprec: `make demo` runs the pipeline on the embedded defaults; `make test` runs the tests.
# Both set up .venv first (scripts/bootstrap.sh), and do nothing more on a second run.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SHOPREC := $(VENV)/bin/shoprec
CONF ?= conf/local.yaml
DEMO_DATE ?= 2026-01-08
EVENTS ?= 10000000
PYTEST_ARGS ?=
MLFLOW_PORT ?= 5000
DATA ?= ../shared/data/movielens-100k
TRAINING_SET ?=
ALS_ARGS ?=
SCALE_ARGS ?=
TOPK_ARGS ?=

.PHONY: setup airflow-env demo test test-unit bench-clean bench-rules bench-movielens bench-ranker bench-als bench-topk bench-scale mlflow-ui mlflow-server mlflow-server-stop package package-env docs clean help

help:
	@echo "make demo         generate a synthetic shop log and run every job on it (local Spark, MLflow on SQLite)"
	@echo "make test         run the test suite"
	@echo "make airflow-env  Airflow and its Spark provider in .airflow-venv (kept apart from the job environment)"
	@echo "make bench-clean  time clean_events against a plain Parquet copy (EVENTS=$(EVENTS))"
	@echo "make bench-rules  FP-Growth vs mlxtend on Groceries and 200k synthetic baskets -> reports/*_rules.json"
	@echo "make bench-movielens  ALS and popularity on MovieLens (DATA=$(DATA)) -> reports/"
	@echo "make bench-ranker ranker training examples/s: Horovod np1, np2 and plain TF -> reports/bench_ranker.json"
	@echo "make bench-als    Spark ALS vs the implicit library, s/iteration and nDCG@10 -> reports/bench_als.json"
	@echo "make bench-topk   ALS top-K with exclusions: shoprec's exact scoring vs MLlib K+500 deep (TOPK_ARGS='--ivf-probes 16 32': also the IVF search) -> reports/bench_topk.json"
	@echo "make bench-scale  every job at 1M/5M/20M events (clean_events 50M): time, memory, growth -> reports/bench_scale.json"
	@echo "make package      build dist/shoprec.zip (--py-files), dist/jobs/ and dist/conf/ for spark-submit"
	@echo "make package-env  pack the job environment into dist/shoprec-env.tar.gz (spark-submit --archives)"
	@echo "make mlflow-ui    open the MLflow UI on http://127.0.0.1:$(MLFLOW_PORT)"
	@echo "make mlflow-server  MLflow tracking server on PostgreSQL, on loopback (stop: make mlflow-server-stop)"
	@echo "make docs         regenerate docs/tables.md from lib/shoprec/catalog.py"
	@echo "make clean        remove var/ (tables, raw logs, MLflow store)"

setup:
	@bash scripts/bootstrap.sh

airflow-env:
	@bash scripts/airflow_env.sh

demo: setup
	@bash scripts/demo.sh "$(CONF)" "$(DEMO_DATE)"

test: setup airflow-env
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench-clean: setup
	$(PY) benchmarks/bench_clean.py --events $(EVENTS)

bench-rules: setup
	$(PY) benchmarks/bench_rules.py $(RULES_ARGS)

bench-movielens: setup
	$(PY) benchmarks/bench_movielens.py --data "$(DATA)"

bench-ranker: setup
	$(PY) benchmarks/bench_ranker.py $(if $(TRAINING_SET),--training-set "$(TRAINING_SET)")

bench-als: setup
	$(PY) benchmarks/bench_als.py $(ALS_ARGS)

bench-topk: setup
	$(PY) benchmarks/bench_topk.py $(TOPK_ARGS)

bench-scale: setup
	$(PY) benchmarks/bench_scale.py $(SCALE_ARGS)

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/var/mlflow.db \
		--default-artifact-root $(CURDIR)/var/mlflow-artifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

mlflow-server: setup
	@MLFLOW_PORT=$(MLFLOW_PORT) bash scripts/mlflow_server.sh start

mlflow-server-stop:
	@bash scripts/mlflow_server.sh stop

docs: setup
	$(PY) -m shoprec.catalog --markdown docs/tables.md

package: setup
	$(PY) scripts/package.py

package-env: setup
	@bash scripts/package_env.sh dist

clean:
	rm -rf var dist spark-warehouse metastore_db derby.log
