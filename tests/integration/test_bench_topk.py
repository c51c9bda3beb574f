"""The top-K benchmark on a small catalogue: both methods rank every user, and where MLlib's
deeper list had room they agree on every item."""

import pytest

from tests.conftest import load_benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_benchmark_times_both_top_ks_and_finds_them_equal_where_mllib_has_room(spark):
    bench = load_benchmark("bench_topk")
    result = bench.measure(spark, users=400, items=300, factors=4, k=5, depth=5)

    assert result["exact_seconds"] > 0 and result["mllib_seconds"] > 0
    # Seconds are reported to 0.1 s, the speed-up is of the unrounded times.
    assert result["speed_up"] == pytest.approx(result["mllib_seconds"] / result["exact_seconds"], abs=0.5)
    assert result["excluded_per_user_max"] > 5  # some users leave out more than MLlib's extra depth ...
    assert result["mllib_users_short"] > 0        # ... and MLlib's lists for them come up short
    assert result["shared_items_fraction"] == 1.0
    assert result["purchases"] >= 400
