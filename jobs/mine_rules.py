"""spark-submit entry for the mine_rules job; see shoprec.jobs.mine_rules for what it does and its arguments.

    spark-submit --master <master> --deploy-mode client --py-files dist/shoprec.zip \
        --files conf/base.yaml,conf/cluster.yaml jobs/mine_rules.py --conf cluster.yaml --run-date YYYY-MM-DD
"""

import sys

from shoprec.jobs.mine_rules import main

if __name__ == "__main__":
    sys.exit(main())
