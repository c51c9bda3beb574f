"""spark-submit entry for the build_training_set job; see shoprec.jobs.build_training_set for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/build_training_set.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.build_training_set import main

if __name__ == "__main__":
    sys.exit(main())
