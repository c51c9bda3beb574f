"""The jobs shoprec runs, each a module with ``main(argv)`` (spark-submit entry) and ``run(spark, cfg, ...)``."""

# Job name -> (module, one-line description). Modules are imported only when their job runs.
JOBS = {
    "generate": ("shoprec.jobs.generate", "write a synthetic shop's raw event log"),
    "clean_events": ("shoprec.jobs.clean_events", "raw logs -> events_clean, events_bot (pseudonymous ids) + events_quarantine, user_id_map (restricted)"),
    "build_profiles": ("shoprec.jobs.build_profiles", "events -> interactions, user/item profiles, cold-start candidates"),
    "train_als": ("shoprec.jobs.train_als", "tuned implicit ALS -> als_recs + similar_items, model registered"),
    "mine_rules": ("shoprec.jobs.mine_rules", "FP-Growth over baskets -> assoc_rules + bought_together"),
    "build_training_set": ("shoprec.jobs.build_training_set", "candidates + features + labels -> sharded ranker training set"),
    "train_ranker": ("shoprec.jobs.train_ranker", "Horovod-distributed TensorFlow ranker on the executors, registered in MLflow"),
    "score": ("shoprec.jobs.score", "rank every user's candidates with the ranker -> recommendations"),
    "search_rerank": ("shoprec.jobs.search_rerank", "match (user, query) searches to items and order them with the ranker -> search_results"),
    "evaluate": ("shoprec.jobs.evaluate", "compare every recommender on a held-out window -> eval_metrics"),
}
