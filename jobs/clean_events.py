"""spark-submit entry for the clean_events job; see shoprec.jobs.clean_events for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/clean_events.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.clean_events import main

if __name__ == "__main__":
    sys.exit(main())
