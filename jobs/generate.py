"""spark-submit entry for the generate job; see shoprec.jobs.generate for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/generate.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.generate import main

if __name__ == "__main__":
    sys.exit(main())
