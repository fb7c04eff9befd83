"""Missing behaviour entries: the collator's ``behavior_valid``, the model's handling (hidden on
input, never scored, no NaN in any layer) and the input validators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neds_hf import DataCollatorForNedsMasking, NedsConfig, NedsForMaskedModeling
from neds_hf.modeling_neds import behavior_validity, check_behavior_inputs

NUM_BINS = 8
SESSIONS = {"s-a": 5, "s-b": 3}
#: The paper's modalities plus two behaviours that may be missing.
MODALITIES = [
    {"name": "spikes", "kind": "spikes"},
    {"name": "wheel_speed", "kind": "continuous"},
    {"name": "licking_rate", "kind": "continuous", "allow_missing": True},
    {"name": "choice", "kind": "categorical", "num_classes": 2},
    {"name": "reward", "kind": "categorical", "num_classes": 2, "allow_missing": True},
]


def config(modalities=MODALITIES, **overrides) -> NedsConfig:
    values = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=8,
        sessions=dict(SESSIONS),
        modalities=modalities,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        embedding_dropout=0.0,
    )
    values.update(overrides)
    return NedsConfig(**values)


def trials(n: int, seed: int = 0) -> list[dict]:
    """Trials of both sessions; trial 1 has no licks at all, trial 2 licks missing in bins
    2..4, trials 2, 5, ... no reward label."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(n):
        session_id = "s-a" if index % 2 == 0 else "s-b"
        licking = rng.poisson(1.0, NUM_BINS).astype(np.float32)
        reward = int(rng.integers(2))
        if index == 1:
            licking[:] = np.nan
        if index == 2:
            licking[2:5] = np.nan
        if index % 3 == 2:
            reward = -1
        examples.append(
            {
                "session_id": session_id,
                "spikes": rng.poisson(2.0, (SESSIONS[session_id], NUM_BINS)).astype(np.int64),
                "wheel_speed": rng.uniform(0, 4, NUM_BINS),
                "licking_rate": licking,
                "choice": int(rng.integers(2)),
                "reward": reward,
            }
        )
    return examples


# ---------------------------------------------------------------------------------------------
# Collator
# ---------------------------------------------------------------------------------------------


def test_collator_turns_missing_entries_into_behavior_valid():
    examples = trials(4)
    batch = DataCollatorForNedsMasking(config(), seed=0)(examples)
    valid = batch["behavior_valid"]  # (B, T, 4): wheel, licking, choice, reward
    assert valid.shape == (4, NUM_BINS, 4) and valid.dtype == torch.bool
    assert valid[:, :, [0, 2]].all()  # behaviours without allow_missing are always valid
    assert not valid[1, :, 1].any()  # no licks at all in trial 1
    assert valid[2, :, 1].tolist() == [True, True, False, False, False, True, True, True]
    assert valid[:, :, 3].tolist() == [
        [r != -1] * NUM_BINS for r in [t["reward"] for t in examples]
    ]
    # fillers are finite: 0 for missing values and labels, real values elsewhere
    assert torch.isfinite(batch["behavior_values"]).all()
    assert (batch["behavior_values"][1, :, 1] == 0).all()
    assert (batch["behavior_values"][2, 2:5, 1] == 0).all()
    np.testing.assert_array_equal(batch["behavior_values"][0, :, 1], examples[0]["licking_rate"])
    assert (batch["behavior_labels"][2, :, 1] == 0).all()


def test_collator_without_missing_capable_behaviours_emits_no_validity_field():
    examples = trials(2)
    paper = [spec for spec in MODALITIES if not spec.get("allow_missing")]
    for example in examples:
        del example["licking_rate"], example["reward"]
    batch = DataCollatorForNedsMasking(config(paper), seed=0)(examples)
    assert "behavior_valid" not in batch


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("licking_rate", np.full(NUM_BINS, np.inf), r"licking_rate has 8 non-finite entries"),
        ("reward", -2, r"reward labels must lie in \[0, 2\) \(-1 where missing\), got \[-2\]"),
        ("reward", float("nan"), r"reward has 1 non-finite entries"),
        ("wheel_speed", np.full(NUM_BINS, np.nan), r"wheel_speed has 8 non-finite entries"),
        ("choice", -1, r"choice labels must lie in \[0, 2\), got \[-1\]"),
    ],
)
def test_collator_rejects_what_is_not_a_missing_marker(field, value, message):
    examples = trials(1)
    examples[0][field] = value
    with pytest.raises(ValueError, match=message):
        DataCollatorForNedsMasking(config(), seed=0)(examples)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> NedsForMaskedModeling:
    torch.manual_seed(0)
    return NedsForMaskedModeling(config()).eval()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    collator = DataCollatorForNedsMasking(
        config(), schemes={"cross_modal": 1.0, "behavior": 1.0}, seed=seed
    )
    return collator(trials(6, seed))


def test_missing_entries_give_finite_loss_and_gradients(model):
    batch = _batch()
    # NaN where the values are missing must not matter either (the model zeroes them)
    batch["behavior_values"][..., 1] = batch["behavior_values"][..., 1].masked_fill(
        ~batch["behavior_valid"][..., 1], float("nan")
    )
    batch["behavior_labels"][..., 1] = batch["behavior_labels"][..., 1].masked_fill(
        ~batch["behavior_valid"][..., 3], -1
    )
    model.zero_grad()
    output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_loss_equals_the_loss_on_valid_entries_only(model):
    batch = _batch(seed=2)
    valid = batch["behavior_valid"]
    assert not valid.all()
    with torch.no_grad():
        output = model(**batch)
        # the same batch with missing entries hidden by hand and not scored: identical loss
        manual = {k: v for k, v in batch.items() if k != "behavior_valid"}
        manual["behavior_mask"] = batch["behavior_mask"] | ~valid
        manual["behavior_target_mask"] = batch["behavior_mask"] & valid
        reference = model(**manual)
    torch.testing.assert_close(output.loss, reference.loss, rtol=0, atol=0)
    # licking_rate's loss is the mean squared error over the scored, valid entries only
    scored = batch["behavior_mask"][..., 1] & valid[..., 1]  # (B, T)
    target = batch["behavior_values"][..., 1]
    predicted = output.behavior_predictions["licking_rate"]
    expected = ((predicted - target)[scored] ** 2).mean()
    torch.testing.assert_close(output.modality_losses["licking_rate"], expected)
    # reward: cross-entropy over the trials whose label is present and hidden
    trial_scored = batch["behavior_mask"][:, 0, 3] & valid[:, 0, 3]  # (B,)
    assert trial_scored.any() and (batch["behavior_mask"][:, 0, 3] & ~valid[:, 0, 3]).any()
    logits = output.behavior_predictions["reward"][trial_scored]
    labels = batch["behavior_labels"][trial_scored, 0, 1]
    torch.testing.assert_close(
        output.modality_losses["reward"], torch.nn.functional.cross_entropy(logits, labels)
    )


def test_all_valid_batch_is_identical_with_and_without_the_validity_field(model):
    batch = _batch(seed=1)
    batch["behavior_valid"][:] = True
    with torch.no_grad():
        with_valid = model(**batch)
        without = model(**{k: v for k, v in batch.items() if k != "behavior_valid"})
    assert torch.equal(with_valid.loss, without.loss)
    assert torch.equal(with_valid.spike_log_rates, without.spike_log_rates)


def test_an_entirely_missing_behaviour_contributes_nothing(model):
    batch = _batch(seed=3)
    batch["behavior_valid"][..., 1] = False
    with torch.no_grad():
        output = model(**batch)
    assert output.modality_losses["licking_rate"] == 0
    assert torch.isfinite(output.loss)


def test_behavior_valid_is_checked(model):
    batch = _batch()
    batch["behavior_valid"] = batch["behavior_valid"][..., :2]
    with pytest.raises(ValueError, match=r"behavior_valid has shape \(6, 8, 2\).*expected a bool"):
        model(**batch)


def test_encoding_with_a_missing_behaviour_equals_hiding_it(model):
    values = torch.rand(2, NUM_BINS, 2)
    labels = torch.ones(2, NUM_BINS, 2, dtype=torch.long)
    values[..., 1] = float("nan")  # licking missing everywhere
    labels[..., 1] = -1  # reward missing
    session_index = torch.tensor([0, 1])
    rates = model.predict_neural_activity(session_index, values, labels)
    assert torch.isfinite(rates).all()
    reference = model.predict_neural_activity(
        session_index,
        values.nan_to_num(0.0),
        labels.clamp_min(0),
        visible_behaviors=["wheel_speed", "choice"],
    )
    torch.testing.assert_close(rates, reference)


def test_validators_accept_markers_only_where_allowed():
    cfg = config()
    values = torch.zeros(1, NUM_BINS, 2)
    values[0, 0, 1] = float("nan")
    labels = torch.zeros(1, NUM_BINS, 2, dtype=torch.long)
    labels[..., 1] = -1
    check_behavior_inputs(cfg, values, labels, 1)
    valid = behavior_validity(cfg, values, labels, 1)
    assert valid[0, 0].tolist() == [True, False, True, False]
    assert valid[0, 1].tolist() == [True, True, True, False]
    values[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"behavior_values has 1 non-finite entries"):
        check_behavior_inputs(cfg, values, labels, 1)
    labels[..., 0] = -1
    with pytest.raises(ValueError, match=r"\(choice\) holds labels in \[-1, -1\]"):
        check_behavior_inputs(cfg, None, labels, 1)


def test_allow_missing_is_validated_and_kept_only_when_set():
    assert "allow_missing" not in NedsConfig().modalities[1]
    assert config().modalities[2]["allow_missing"] is True
    with pytest.raises(ValueError, match="allow_missing must be true or false"):
        config([MODALITIES[0], {"name": "x", "kind": "continuous", "allow_missing": "yes"}])
    with pytest.raises(ValueError, match="spikes cannot be missing"):
        config([{"name": "spikes", "kind": "spikes", "allow_missing": True}])


# ---------------------------------------------------------------------------------------------
# Evaluation and baselines
# ---------------------------------------------------------------------------------------------


def _session_b_without_licks(n: int = 12) -> list[dict]:
    examples = trials(n, seed=4)
    for position, example in enumerate(examples):
        example["trial_id"] = position
        if example["session_id"] == "s-b":
            example["licking_rate"] = np.full(NUM_BINS, np.nan, dtype=np.float32)
    return examples


def test_evaluation_skips_missing_entries_and_reports_a_missing_behaviour(model):
    from neds_hf.evaluation import evaluate_trials, predict_session, score_session
    from neds_hf.metrics import accuracy, r2_flattened

    examples = _session_b_without_licks()
    report = evaluate_trials(model, examples, per_behavior_encoding=True)
    assert report.missing_modalities == {"s-b": ["licking_rate"]}
    assert np.isnan(report.per_session["s-b"]["licking_rate_r2"])
    assert np.isnan(report.per_session["s-b"]["bps_licking_rate_only"])
    assert np.isfinite(report.per_session["s-b"]["wheel_speed_r2"])
    session_a = [t for t in examples if t["session_id"] == "s-a"]
    lick_gaps = sum(int(np.isnan(t["licking_rate"]).sum()) for t in session_a)
    no_reward = sum(t["reward"] == -1 for t in session_a)
    assert lick_gaps and no_reward
    assert report.skipped_entries["s-a"] == {
        "licking_rate": [lick_gaps, len(session_a) * NUM_BINS],
        "reward": [no_reward, len(session_a)],
    }
    # the scores are those of the present entries only
    decoding = predict_session(model, session_a, "decoding")
    lick_target = np.stack([t["licking_rate"] for t in session_a])
    present = ~np.isnan(lick_target)
    expected_r2 = r2_flattened(
        decoding.behavior_predictions["licking_rate"][present], lick_target[present]
    )
    assert report.per_session["s-a"]["licking_rate_r2"] == pytest.approx(expected_r2, rel=1e-6)
    rewards = np.array([t["reward"] for t in session_a])
    expected_accuracy = accuracy(
        decoding.behavior_predictions["reward"][rewards >= 0], rewards[rewards >= 0]
    )
    assert score_session(model.config, None, decoding)["reward_accuracy"] == expected_accuracy
    markdown = report.to_markdown()
    assert "- s-b: licking_rate missing" in markdown
    assert f"licking_rate {lick_gaps} of {len(session_a) * NUM_BINS} entries skipped" in markdown
    assert report.to_dict()["missing_modalities"] == {"s-b": ["licking_rate"]}


def test_evaluation_of_a_model_without_missing_capable_behaviours_reports_nothing_new():
    from neds_hf.evaluation import evaluate_trials

    paper = [spec for spec in MODALITIES if not spec.get("allow_missing")]
    torch.manual_seed(0)
    plain = NedsForMaskedModeling(config(paper)).eval()
    examples = _session_b_without_licks(4)
    report = evaluate_trials(plain, examples)
    assert report.skipped_entries is None
    assert "skipped_entries" not in report.to_dict() and "Missing" not in report.to_markdown()


def test_linear_baselines_leave_missing_entries_out_and_say_so():
    from neds_hf.baselines import fit_linear_baselines, trials_to_arrays

    examples = [t for t in trials(24, seed=5) if t["session_id"] == "s-a"]
    for position, example in enumerate(examples):
        example["trial_id"] = position
    examples[0]["licking_rate"][:] = np.nan
    specs = config().behavior_modalities
    train, test = trials_to_arrays(examples[:8], specs), trials_to_arrays(examples[8:], specs)
    result = fit_linear_baselines(train, test, specs, seed=0)
    assert np.isfinite(result.encoder_rates).all()
    assert np.isfinite(result.decoded["licking_rate"]).all()
    assert any(
        "ridge licking_rate decoder fitted on the 6 of 8 train trials" in n for n in result.notes
    )
    assert any("licking_rate missing in 11 of 64 train" in n for n in result.notes)
    n_missing_rewards = int((train["reward"] == -1).sum())
    assert n_missing_rewards and any(
        f"logistic reward decoder fitted on the {8 - n_missing_rewards} of 8" in n
        for n in result.notes
    )
