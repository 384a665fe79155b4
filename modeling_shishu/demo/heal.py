"""The demo's healing run as a module accelerate can launch:

    accelerate launch ... -m modeling_shishu.demo.heal --config <package>/demo/heal.yaml [--field value ...]

It is `modeling_shishu.training.distill` (distillation from the parent) under a module name `-m` runs.
"""

import sys

from ..training.distill import main


if __name__ == "__main__":
    sys.exit(main())
