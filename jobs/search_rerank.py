"""spark-submit entry for the search_rerank job; see shoprec.jobs.search_rerank for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/search_rerank.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.search_rerank import main

if __name__ == "__main__":
    sys.exit(main())
