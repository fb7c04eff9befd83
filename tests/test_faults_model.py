"""Bad inputs to the model, its loading and its collator: each row one fault and the error it gets.

A new fault is one more row: a function that provokes it (given a tiny model and a temporary
folder) and a fragment of the message the user must see (the argument / tensor / session named,
and what was expected).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from neds_hf import DataCollatorForNedsMasking, NedsConfig, NedsForMaskedModeling

NUM_BINS = 6
SESSIONS = {"s-a": 4, "s-b": 3, "s-c": 5}


@pytest.fixture(scope="module")
def model() -> NedsForMaskedModeling:
    torch.manual_seed(0)
    config = NedsConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=8,
        sessions=dict(SESSIONS),
    )
    return NedsForMaskedModeling(config).eval()


def behaviour(batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid behaviour for the default IBL modalities: values (B, T, 2), labels (B, T, 2)."""
    values = torch.randn(batch_size, NUM_BINS, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(batch_size, NUM_BINS, 2, dtype=torch.long)
    return values, labels


def trial(**overrides) -> dict:
    """One valid dataset example of session s-a, with fields overridden."""
    example = {
        "session_id": "s-a",
        "spikes": np.ones((SESSIONS["s-a"], NUM_BINS), dtype=np.int64),
        "wheel_speed": np.zeros(NUM_BINS),
        "whisker_motion_energy": np.ones(NUM_BINS),
        "choice": 1,
        "block": 2,
    }
    example.update(overrides)
    return example


def with_nan(array: np.ndarray, count: int = 1) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64).copy()
    out.reshape(-1)[:count] = np.nan
    return out


# ------------------------------------------------------------------------------------------------
# The faults


def damaged_checkpoint(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["neds.final_norm.weight"][:3] = float("nan")
    weights["spike_readout.session_neurons.neuron_weight"][0, 0] = float("inf")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    NedsForMaskedModeling.from_pretrained(tmp_path)


def damaged_state_dict(model, tmp_path):
    state = {name: value.clone() for name, value in model.state_dict().items()}
    state["neds.final_norm.bias"][0] = float("nan")
    NedsForMaskedModeling(model.config).load_state_dict(state)


FAULTS: list[tuple[str, Callable, str]] = [
    (
        "checkpoint-with-nan-weights",
        damaged_checkpoint,
        r"non-finite weights .*neds\.final_norm\.weight \(3 of 16 entries\), "
        r"spike_readout\.session_neurons\.neuron_weight \(1 of",
    ),
    (
        "state-dict-with-nan",
        damaged_state_dict,
        r"non-finite values \(NaN or inf\) in neds\.final_norm\.bias \(1 of 16",
    ),
    (
        "encode-session-out-of-range",
        lambda model, _: model.predict_neural_activity(torch.tensor([0, 7])),
        r"session_index must lie in \[0, 3\) .*got out-of-range rows \[7\]",
    ),
    (
        "encode-negative-session",
        lambda model, _: model.predict_neural_activity(torch.tensor([-1, 0])),
        r"session_index must lie in \[0, 3\) .*got out-of-range rows \[-1\]",
    ),
    (
        "encode-0d-session-index",
        lambda model, _: model.predict_neural_activity(torch.tensor(1)),
        r"session_index has shape \(\), dtype torch\.int64; expected a 1-D integer tensor",
    ),
    (
        "encode-float-session-index",
        lambda model, _: model.predict_neural_activity(torch.tensor([0.0, 1.0])),
        r"session_index has shape \(2,\), dtype torch\.float32; expected a 1-D integer",
    ),
    (
        "encode-empty-batch",
        lambda model, _: model.predict_neural_activity(torch.zeros(0, dtype=torch.long)),
        r"session_index is empty \(shape \(0,\)",
    ),
    (
        "encode-nan-behaviour",
        lambda model, _: model.predict_neural_activity(
            torch.tensor([0, 1]), behaviour()[0].index_fill(1, torch.tensor([0]), float("nan"))
        ),
        r"behavior_values has 4 non-finite entries \(NaN or inf\) of 24",
    ),
    (
        "encode-float-labels",
        lambda model, _: model.predict_neural_activity(
            torch.tensor([0, 1]), None, behaviour()[1].float()
        ),
        r"behavior_labels has shape \(2, 6, 2\), dtype torch\.float32; expected integer class",
    ),
    (
        "encode-labels-out-of-range",
        lambda model, _: model.predict_neural_activity(
            torch.tensor([0, 1]), None, behaviour()[1].index_fill(2, torch.tensor([1]), 5)
        ),
        r"behavior_labels\[\.\.\., 1\] \(block\) holds labels in \[5, 5\]; expected classes "
        r"in \[0, 3\)",
    ),
    (
        "encode-behaviour-wrong-shape",
        lambda model, _: model.predict_neural_activity(torch.tensor([0, 1]), torch.zeros(2, 6)),
        r"behavior_values has shape \(2, 6\), dtype torch\.float32; expected \(batch=2, time "
        r"bins=6, 2\) for \['wheel_speed', 'whisker_motion_energy'\]",
    ),
    (
        "decode-inf-spikes",
        lambda model, _: model.predict_behavior(
            torch.ones(2, NUM_BINS, 5).index_fill(2, torch.tensor([4]), float("inf")),
            torch.tensor([0, 2]),
        ),
        r"spikes has 12 non-finite entries \(NaN or inf\) of 60",
    ),
    (
        "decode-session-out-of-range",
        lambda model, _: model.predict_behavior(torch.ones(2, NUM_BINS, 5), torch.tensor([3, 0])),
        r"session_index must lie in \[0, 3\) .*got out-of-range rows \[3\]",
    ),
    (
        "decode-spikes-without-batch",
        lambda model, _: model.predict_behavior(torch.ones(NUM_BINS, 5), torch.tensor([0])),
        r"spikes has shape \(6, 5\), dtype torch\.float32; expected \(batch=1, time bins=6, "
        r"neurons\)",
    ),
    (
        "forward-empty-batch",
        lambda model, _: model(torch.ones(0, NUM_BINS, 5), torch.zeros(0, dtype=torch.long)),
        r"session_index is empty \(shape \(0,\)",
    ),
    (
        "forward-float-session-index",
        lambda model, _: model(torch.ones(2, NUM_BINS, 5), torch.tensor([0.0, 1.0])),
        r"session_index must hold integer session rows, got dtype torch\.float32",
    ),
    (
        "collate-nan-spikes",
        lambda model, _: DataCollatorForNedsMasking(model.config)(
            [trial(), trial(spikes=with_nan(np.ones((4, NUM_BINS)), 2))]
        ),
        r"session s-a: spikes has 2 non-finite entries \(NaN or inf\) of 24",
    ),
    (
        "collate-nan-wheel-speed",
        lambda model, _: DataCollatorForNedsMasking(model.config)(
            [trial(wheel_speed=with_nan(np.zeros(NUM_BINS)))]
        ),
        r"session s-a: wheel_speed has 1 non-finite entries",
    ),
    (
        "collate-nan-choice",
        lambda model, _: DataCollatorForNedsMasking(model.config)([trial(choice=float("nan"))]),
        r"session s-a: choice has 1 non-finite entries",
    ),
    (
        "collate-fractional-label",
        lambda model, _: DataCollatorForNedsMasking(model.config)([trial(block=0.5)]),
        r"session s-a: block labels must be integer classes, got float64 values \[0\.5\]",
    ),
]


@pytest.mark.parametrize(
    ("provoke", "message"),
    [pytest.param(provoke, message, id=name) for name, provoke, message in FAULTS],
)
def test_fault_gives_a_clear_error(model, tmp_path, provoke, message):
    with pytest.raises(ValueError, match=message):
        provoke(model, tmp_path)


def test_a_healthy_checkpoint_and_inputs_still_pass(model, tmp_path):
    """The checks refuse only bad inputs: the same calls with good values work."""
    model.save_pretrained(tmp_path)
    loaded = NedsForMaskedModeling.from_pretrained(tmp_path)
    values, labels = behaviour()
    rates = loaded.predict_neural_activity([0, 2], values, labels)  # a list is accepted too
    assert rates.shape == (2, NUM_BINS, 5) and torch.isfinite(rates).all()
    decoded = loaded.predict_behavior(torch.ones(2, NUM_BINS, 5), torch.tensor([0, 2]))
    assert torch.isfinite(decoded["wheel_speed"]).all()
    batch = DataCollatorForNedsMasking(model.config)([trial(), trial(choice=1.0)])
    assert batch["behavior_labels"][1, 0, 0] == 1
