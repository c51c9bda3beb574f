"""spark-submit entry for the score job; see shoprec.jobs.score for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/score.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.score import main

if __name__ == "__main__":
    sys.exit(main())
