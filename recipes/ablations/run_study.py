"""Small-scale replication study: from-scratch pretraining of ShishuLM layouts on the same tokens.

Reproduce the committed results (docs/ablations.md, docs/ablations.json, docs/ablations.png) from the
repository root with one command:

    python recipes/ablations/run_study.py --study recipes/ablations/study.yaml

The arms, fairness checks and measurements are described in recipes/ablations/README.md; the code is
`modeling_shishu.training.ablations`.
"""

import sys

from modeling_shishu.training.ablations import main


if __name__ == "__main__":
    sys.exit(main())
