"""Run by test_training under ``accelerate launch``: train, then write what this rank ended with.

Writes ``<output_dir>/rank-<rank>.json`` with a digest of the final weights and the step and
sample counts, so the test can compare ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from neds_hf.training import parse_training_args, train


def main() -> None:
    args = parse_training_args(sys.argv[1:])
    result = train(args)
    digest = hashlib.sha256()
    for name, parameter in sorted(result.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().to(torch.float64).cpu().numpy().tobytes())
    rank = int(os.environ.get("RANK", "0"))
    summary = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "num_processes": result.num_processes,
        "global_step": result.global_step,
        "samples_seen": result.samples_seen,
        "global_batch_size": result.global_batch_size,
        "weights_sha256": digest.hexdigest(),
    }
    Path(args.output_dir, f"rank-{rank}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
