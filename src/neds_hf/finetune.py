"""``python -m neds_hf.finetune --config CONFIG.yaml``: fine-tune a pretrained NEDS on new sessions.

Loads ``model_name_or_path`` (a folder or Hub id), adds fresh per-session parameters for the
dataset's sessions and trains; ``freeze_encoder`` keeps the shared encoder fixed for a warm-up
(``warmup`` with ``freeze_warmup_steps``) or entirely (``all``).
"""

from __future__ import annotations

import sys

from .training import main

if __name__ == "__main__":
    sys.exit(main(mode="finetune"))
