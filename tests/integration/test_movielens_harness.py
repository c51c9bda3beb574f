"""The MovieLens benchmark harness: both file formats, the report names, the protocol's guarantees."""

import dataclasses
import json
import random

import pytest

from shoprec.config import load_config
from shoprec.models.als import AlsParams, AlsSolver
from tests.conftest import PROJECT, load_benchmark

pytestmark = pytest.mark.integration


def ratings(seed: int = 3):
    """Two taste groups of users, each rating most of its group's movies."""
    rng = random.Random(seed)
    rows = []
    for user in range(1, 41):
        group = range(1, 21) if user <= 20 else range(21, 41)
        for item in group:
            if rng.random() < 0.7:
                rows.append((user, item, rng.choice([3, 4, 5]), 880000000 + user * 1000 + item))
    return rows


@pytest.mark.parametrize("layout", ["u.data", "ratings.csv"])
def test_harness_reads_both_formats_and_writes_named_reports(spark, tmp_path, layout):
    bench = load_benchmark("bench_movielens")
    data = tmp_path / "ml-tiny"
    data.mkdir()
    rows = ratings()
    if layout == "u.data":
        (data / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    else:
        (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},{float(r)},{t}\n" for u, i, r, t in rows))
    loaded = bench.read_ratings(spark, data)
    assert loaded.count() == len(rows)
    assert loaded.select("user_id").distinct().count() == 40

    reports = tmp_path / "reports"
    grid = [AlsParams(rank=4, reg_param=0.1, alpha=5.0, max_iter=5), AlsParams(rank=2, reg_param=1.0, alpha=1.0, max_iter=5)]
    results = bench.run_benchmark(spark, data, grid, seed=1, reports=reports, als_solver=AlsSolver(blocks=1))
    written = json.loads((reports / "movielens_ml-tiny.json").read_text())
    assert written == results
    assert set(written) == {"popularity", "als"}
    assert set(written["als"]) == {"precision@10", "recall@10", "ndcg@10", "map@10"}
    # Two clean taste groups: ALS must beat recommending the overall favourites.
    assert written["als"]["ndcg@10"] > written["popularity"]["ndcg@10"]
    details = json.loads((reports / "movielens_ml-tiny_details.json").read_text())
    assert len(details["tuning"]) == 2
    assert details["counts"]["train"] + details["counts"]["test"] == len(rows)
    assert (reports / "movielens_ml-tiny.md").read_text().startswith("# movielens_ml-tiny")


def test_missing_ratings_file_is_a_clear_error(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither u.data nor ratings.csv"):
        load_benchmark("bench_movielens").read_ratings(spark, tmp_path)


def test_the_cg_solver_is_scored_into_its_own_report(spark, tmp_path):
    bench = load_benchmark("bench_movielens")
    data = tmp_path / "ml-tiny"
    data.mkdir()
    (data / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings()))
    reports = tmp_path / "reports"
    grid = [AlsParams(rank=4, reg_param=1.0, alpha=5.0, max_iter=5)]
    results = bench.run_benchmark(spark, data, grid, seed=1, reports=reports, als_solver=AlsSolver("cg", blocks=2))
    assert json.loads((reports / "movielens_ml-tiny_cg.json").read_text()) == results
    assert not (reports / "movielens_ml-tiny.json").exists()
    assert results["als"]["ndcg@10"] > results["popularity"]["ndcg@10"]
    details = json.loads((reports / "movielens_ml-tiny_cg_details.json").read_text())
    assert details["als_solver"] == {"name": "cg", "blocks": 2, "cg_steps": 3}
    assert "solver cg" in (reports / "movielens_ml-tiny_cg.md").read_text()


@pytest.mark.slow
def test_the_pipeline_row_chooses_its_options_on_the_validation_part(spark, tmp_path):
    """The pipeline row: the defaults and each alternative of each choice are trained and scored
    on the validation part, the best is the one the test part sees, and the reports say so."""
    bench = load_benchmark("bench_movielens")
    data = tmp_path / "ml-tiny"
    data.mkdir()
    (data / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings()))
    cfg = load_config(PROJECT / "conf" / "base.yaml")
    cfg = dataclasses.replace(cfg, ranker=dataclasses.replace(cfg.ranker, epochs=2, batch_size=64,
                                                              validation_percent=20))
    reports = tmp_path / "reports"
    grid = [AlsParams(rank=4, reg_param=0.1, alpha=5.0, max_iter=5)]
    # One choice of two values keeps the search (and the suite) short: two tries, then the test part.
    choices = {"loss": bench.PIPELINE_CHOICES["loss"]}
    results = bench.run_benchmark(spark, data, grid, seed=1, reports=reports, als_solver=AlsSolver(blocks=1),
                                  cfg=cfg, work=tmp_path / "work", choices=choices)

    assert set(results) == {"popularity", "als", "pipeline"}
    assert all(0.0 <= v <= 1.0 for v in results["pipeline"].values())
    details = json.loads((reports / "movielens_ml-tiny_details.json").read_text())
    selection = details["pipeline"]["inner_selection"]
    assert selection["als_ndcg@10"] == max(t["ndcg@10"] for t in details["tuning"])
    tried = selection["tried"]
    # The defaults, then one try per alternative value of the choice; the other options keep their defaults.
    assert [t["options"] for t in tried] == [
        bench.describe(bench.default_options()),
        bench.describe({**bench.default_options(), "loss": bench.PIPELINE_CHOICES["loss"][1]})]
    best = max(t["ndcg@10"] for t in tried)
    chosen = selection["options"]
    assert next(t for t in tried if t["options"] == bench.describe(chosen))["ndcg@10"] == best
    assert details["pipeline"]["candidates"] == chosen["candidates"]
    assert details["pipeline"]["loss"] == chosen["loss"]
    assert details["pipeline"]["id_embeddings"] == chosen["id_embeddings"]
    assert all((tmp_path / "work" / f"select-{i}" / "ranker" / "model").is_dir() for i in range(len(tried)))
    report = (reports / "movielens_ml-tiny.md").read_text()
    assert "Options chosen on the validation part" in report
    assert f"Chosen: {bench.describe(chosen)}." in report
