"""FP-Growth on the real Groceries baskets equals an independent implementation (mlxtend)."""

import importlib.util

import pytest

from tests.conftest import PROJECT, shared_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_rules", PROJECT / "benchmarks" / "bench_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rule_set_equals_mlxtend(spark):
    path = shared_dataset("groceries-arules") / "groceries.csv"
    bench = load_bench()
    ours, _ = bench.spark_rules(spark, path)
    theirs, _ = bench.mlxtend_rules(path)
    assert bench.differences(ours, theirs) == []
    # The published R arules figure for this data at the same thresholds.
    assert len(ours) == 5668
    assert max(v[2] for v in ours.values()) == pytest.approx(18.9957, abs=1e-4)
