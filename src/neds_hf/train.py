"""``python -m neds_hf.train --config CONFIG.yaml``: pretraining (or fine-tuning) with Accelerate.

Launch on one CPU with ``python -m neds_hf.train ...``, on N CPU processes with
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m neds_hf.train ...``
and on GPUs / nodes with ``accelerate launch --config_file ACCELERATE.yaml -m neds_hf.train ...``.
"""

from __future__ import annotations

import sys

from .training import main

if __name__ == "__main__":
    sys.exit(main())
