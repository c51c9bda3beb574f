"""The top-K benchmark on a small catalogue: every method ranks every user, where MLlib's deeper
list had room it agrees with the exact one on every item, and the IVF search's recall is
measured against the exact lists."""

import pytest

from tests.conftest import load_benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_benchmark_times_both_top_ks_and_finds_them_equal_where_mllib_has_room(spark):
    bench = load_benchmark("bench_topk")
    result = bench.measure(spark, users=400, items=300, factors=4, k=5, depth=5, ivf_probes=(1, 17), ivf_lists=17)

    assert result["exact_seconds"] > 0 and result["mllib_seconds"] > 0
    # Seconds are reported to 0.1 s, the speed-up is of the unrounded times.
    assert result["speed_up"] == pytest.approx(result["mllib_seconds"] / result["exact_seconds"], abs=0.5)
    assert result["excluded_per_user_max"] > 5  # some users leave out more than MLlib's extra depth ...
    assert result["mllib_users_short"] > 0        # ... and MLlib's lists for them come up short
    assert result["shared_items_fraction"] == 1.0
    assert result["purchases"] >= 400
    narrow, everywhere = result["ivf"]
    assert (narrow["probes"], narrow["lists"], everywhere["probes"]) == (1, 17, 17)
    assert everywhere["recall"] == 1.0        # every list probed: the exact search
    assert 0.0 < narrow["recall"] < 1.0       # one list per user: part of it
    assert narrow["seconds"] > 0 and everywhere["seconds"] > 0
