"""Training-step time of NEDS at the paper's single-session sizes, and what the design choices buy.

Compares, in the same run and on the same inputs (ratios are what matter; absolute times depend
on the machine):

* ``neds_hf``: the default model — one token per trial-level variable (302 tokens per IBL trial)
  and key dropout inside attention, which keeps `scaled_dot_product_attention` on its fused
  kernels;
* ``+ prob. dropout``: the same model with dropout on the attention probabilities instead (what
  the reference code does; ``attention_dropout_mode="probabilities"``), which on CPU cannot use
  SDPA's fused kernel and runs as eager attention (half the cost of SDPA's own dropout path);
* ``+ 500 tokens``: the reference token layout too (choice and block spread over all 100 bins).

Run: ``python benchmarks/bench_model.py [--threads 2] [--batch-size 16] [--layers 5] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.modeling_neds import make_dummy_inputs


def time_training_step(config: NedsConfig, batch_size: int, steps: int) -> float:
    """Median seconds of forward + backward + AdamW step."""
    torch.manual_seed(0)
    model = NedsForMaskedModeling(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_dummy_inputs(config, batch_size=batch_size)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument(
        "--neurons", type=int, default=668, help="neurons of the session (reference N_max: 668)"
    )
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = {"num_hidden_layers": args.layers, "sessions": {"session": args.neurons}}
    probabilities = {"attention_dropout_mode": "probabilities"}
    variants = [
        ("neds_hf (302 tokens, key dropout)", NedsConfig(**common)),
        ("+ prob. dropout (302 tokens)", NedsConfig(**common, **probabilities)),
        (
            "+ prob. dropout + 500 tokens",
            NedsConfig(**common, **probabilities, spread_trial_tokens=True),
        ),
    ]
    print(
        f"NEDS training step, hidden 256, {args.layers} layers, dropout 0.4, "
        f"batch {args.batch_size}, {args.neurons} neurons, {args.threads} threads, "
        f"median of {args.steps} steps"
    )
    print("| variant | tokens | step (s) | slowdown vs neds_hf |")
    print("|---|---|---|---|")
    baseline = None
    for name, config in variants:
        seconds = time_training_step(config, args.batch_size, args.steps)
        baseline = baseline or seconds
        print(f"| {name} | {config.num_tokens} | {seconds:.3f} | {seconds / baseline:.2f}x |")


if __name__ == "__main__":
    main()
