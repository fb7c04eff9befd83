"""Training-step time of NEDS at the paper's single-session sizes, and what the design choices buy.

Compares, in the same run and on the same inputs (ratios are what matter; absolute times depend
on the machine):

* ``neds_hf``: the default model — one token per trial-level variable (302 tokens per IBL trial)
  and key dropout inside attention, which keeps `scaled_dot_product_attention` on its fused
  kernels;
* ``+ prob. dropout``: the same model with dropout on the attention probabilities instead (what
  the reference code does), which forces SDPA's unfused path;
* ``+ 500 tokens``: the reference token layout too (choice and block spread over all 100 bins).

Run: ``python benchmarks/bench_model.py [--threads 2] [--batch-size 16] [--layers 5] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.modeling_neds import NedsAttention, apply_rotary, make_dummy_inputs


def probability_dropout_forward(
    self, hidden_states, rotary, attention_mask, output_attentions=False
):
    """NedsAttention.forward with dropout on the attention probabilities (the reference's way)."""
    batch_size, length, _ = hidden_states.shape
    qkv = self.qkv_proj(hidden_states).view(batch_size, length, 3, self.num_heads, self.head_dim)
    query_key = apply_rotary(qkv[:, :, :2], rotary)  # (B, L, 2, heads, head_dim)
    query, key = query_key.permute(2, 0, 3, 1, 4).unbind(0)
    value = qkv[:, :, 2].transpose(1, 2)
    context = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=self.attention_dropout if self.training else 0.0,
    )
    context = context.transpose(1, 2).reshape(batch_size, length, -1)
    return self.dropout(self.out_proj(context)), None


def time_training_step(
    config: NedsConfig, batch_size: int, steps: int, probability_dropout: bool
) -> float:
    """Median seconds of forward + backward + AdamW step."""
    torch.manual_seed(0)
    model = NedsForMaskedModeling(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_dummy_inputs(config, batch_size=batch_size)
    original = NedsAttention.forward
    if probability_dropout:
        NedsAttention.forward = probability_dropout_forward
    try:
        times = []
        for _ in range(steps + 1):  # the first step warms up
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - start)
    finally:
        NedsAttention.forward = original
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
    sessions = {"session": args.neurons}
    variants = [
        (
            "neds_hf (302 tokens, key dropout)",
            NedsConfig(num_hidden_layers=args.layers, sessions=sessions),
            False,
        ),
        (
            "+ prob. dropout (302 tokens)",
            NedsConfig(num_hidden_layers=args.layers, sessions=sessions),
            True,
        ),
        (
            "+ prob. dropout + 500 tokens",
            NedsConfig(num_hidden_layers=args.layers, sessions=sessions, spread_trial_tokens=True),
            True,
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
    for name, config, probability_dropout in variants:
        seconds = time_training_step(config, args.batch_size, args.steps, probability_dropout)
        baseline = baseline or seconds
        print(f"| {name} | {config.num_tokens} | {seconds:.3f} | {seconds / baseline:.2f}x |")


if __name__ == "__main__":
    main()
