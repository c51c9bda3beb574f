"""The ALS benchmark on a small synthetic set: every library is timed the given number of times,
the medians are what the report gives, and each model is scored."""

import statistics

import pytest

from tests.conftest import load_benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_benchmark_reports_the_median_of_its_repeated_timings_and_every_models_ndcg(spark):
    bench = load_benchmark("bench_als")
    pairs = bench.synthetic_pairs(300, 80, 3000, seed=1)
    results, blas = bench.measure(spark, pairs, ranks=[4], iterations=4, repeats=3, cores=2)

    assert set(results) == {"4"} and set(blas) == {"blas", "lapack"}
    report = results["4"]
    for library, key in (("spark", "spark_s_per_iter"), ("cg", "cg_s_per_iter"), ("implicit", "implicit_s_per_iter")):
        runs = report["s_per_iter_runs"][library]
        assert len(runs) == 3
        assert report[key] == pytest.approx(statistics.median(runs), abs=1e-3)
    assert report["spark_fit_seconds"] > 0 and report["cg_fit_seconds"] > 0
    for key in ("spark_ndcg_at_10", "implicit_ndcg_at_10", "cg_ndcg_at_10", "implicit_items_first_ndcg_at_10"):
        assert 0.0 < report[key] <= 1.0, key
    # The CG solver and implicit optimise one objective with one kernel: their quality is alike.
    assert report["cg_ndcg_at_10"] == pytest.approx(report["implicit_ndcg_at_10"], abs=0.1)
