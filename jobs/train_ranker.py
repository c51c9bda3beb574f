"""spark-submit entry for the train_ranker job; see shoprec.jobs.train_ranker for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/train_ranker.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.train_ranker import main

if __name__ == "__main__":
    sys.exit(main())
