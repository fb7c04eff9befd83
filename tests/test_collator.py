"""DataCollatorForNedsMasking: padding, behaviour tensors, seeded scheme sampling, protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neds_hf import DataCollatorForNedsMasking, NedsConfig, NedsForMaskedModeling

NUM_BINS = 20
SESSIONS = {"s-a": 6, "s-b": 11}
REGIONS = {"s-a": ["CA1", "CA1", "DG", "DG", "LP", "LP"], "s-b": ["PO"] * 4 + ["VISa"] * 7}


def config(**overrides) -> NedsConfig:
    values = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=8,
        sessions=dict(SESSIONS),
    )
    values.update(overrides)
    return NedsConfig(**values)


def mtm_config(**overrides) -> NedsConfig:
    values = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=8,
    )
    values.update(overrides)
    return NedsConfig.for_mtm(dict(SESSIONS), **values)


def trials(n: int, seed: int = 0, spike_only: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(n):
        session_id = "s-a" if index % 2 == 0 else "s-b"
        example = {
            "session_id": session_id,
            "spikes": rng.poisson(2.0, (SESSIONS[session_id], NUM_BINS)).astype(np.int64),
        }
        if not spike_only:
            example.update(
                wheel_speed=rng.uniform(0, 4, NUM_BINS),
                whisker_motion_energy=rng.uniform(1, 3, NUM_BINS),
                choice=int(rng.integers(2)),
                block=int(rng.integers(3)),
            )
        examples.append(example)
    return examples


NORMALIZATION = {
    session: {
        "wheel_speed": {"mean": 2.0, "std": 1.0, "min": 0.0, "max": 4.0},
        "whisker_motion_energy": {"mean": 2.0, "std": 0.5, "min": 1.0, "max": 3.0},
    }
    for session in SESSIONS
}


def test_padding_session_index_and_behaviour_tensors():
    examples = trials(3)
    batch = DataCollatorForNedsMasking(
        config(), normalization=NORMALIZATION, normalization_method="minmax", seed=0
    )(examples)
    assert batch["spikes"].shape == (3, NUM_BINS, 11) and batch["spikes"].dtype == torch.float32
    assert batch["session_index"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(batch["spikes"][0, :, :6].numpy(), examples[0]["spikes"].T)
    np.testing.assert_array_equal(batch["spikes"][1].numpy(), examples[1]["spikes"].T)
    assert torch.all(batch["spikes"][0, :, 6:] == 0) and not batch["spike_mask"][0, :, 6:].any()
    # min-max normalisation with the session's constants
    np.testing.assert_allclose(
        batch["behavior_values"][0, :, 0].numpy(), examples[0]["wheel_speed"] / 4.0, rtol=1e-6
    )
    np.testing.assert_allclose(
        batch["behavior_values"][2, :, 1].numpy(),
        (examples[2]["whisker_motion_energy"] - 1.0) / 2.0,
        rtol=1e-6,
    )
    # the default method is the model's (z-scoring by default)
    zscored = DataCollatorForNedsMasking(config(), normalization=NORMALIZATION)(examples)
    minmax_model = config(behavior_normalization="minmax")
    assert torch.equal(
        DataCollatorForNedsMasking(minmax_model, normalization=NORMALIZATION)(examples)[
            "behavior_values"
        ],
        batch["behavior_values"],
    )
    np.testing.assert_allclose(
        zscored["behavior_values"][1, :, 1].numpy(),
        (examples[1]["whisker_motion_energy"] - 2.0) / 0.5,
        rtol=1e-6,
    )
    assert batch["behavior_labels"].shape == (3, NUM_BINS, 2)
    assert batch["behavior_labels"][1, :, 0].tolist() == [examples[1]["choice"]] * NUM_BINS
    assert batch["behavior_labels"][2, :, 1].tolist() == [examples[2]["block"]] * NUM_BINS
    model = NedsForMaskedModeling(config())
    assert torch.isfinite(model(**batch).loss)


def test_modalities_come_from_the_config_not_from_ibl_names():
    """Other modality names and kinds collate and train: nothing downstream of the config
    assumes the IBL modalities."""
    modalities = [
        {"name": "pupil_diameter", "kind": "continuous"},
        {"name": "spikes", "kind": "spikes"},
        {"name": "stimulus", "kind": "categorical", "num_classes": 4, "trial_level": False},
        {"name": "reward", "kind": "categorical", "num_classes": 2},
    ]
    custom = config(modalities=modalities)
    rng = np.random.default_rng(5)
    examples = [
        {
            "session_id": session_id,
            "spikes": rng.poisson(1.0, (SESSIONS[session_id], NUM_BINS)),
            "pupil_diameter": rng.normal(size=NUM_BINS),
            "stimulus": rng.integers(0, 4, NUM_BINS),
            "reward": int(rng.integers(2)),
        }
        for session_id in ("s-b", "s-a", "s-b")
    ]
    batch = DataCollatorForNedsMasking(custom, seed=1)(examples)
    assert batch["behavior_values"].shape == (3, NUM_BINS, 1)
    np.testing.assert_allclose(
        batch["behavior_values"][1, :, 0].numpy(), examples[1]["pupil_diameter"], rtol=1e-6
    )
    assert batch["behavior_labels"][2, :, 0].tolist() == examples[2]["stimulus"].tolist()
    assert batch["behavior_labels"][0, :, 1].tolist() == [examples[0]["reward"]] * NUM_BINS
    assert batch["behavior_mask"].shape == (3, NUM_BINS, 3)
    model = NedsForMaskedModeling(custom)
    # spike tokens come first whatever the config order; their embeddings are the spikes' ones
    assert model.neds.token_modality[:NUM_BINS].tolist() == [1] * NUM_BINS
    assert model.neds.token_modality[NUM_BINS:].tolist() == [0] * NUM_BINS + [2] * NUM_BINS + [3]
    assert model.neds.token_time_row[:NUM_BINS].tolist() == list(range(NUM_BINS))
    out = model(**batch)
    assert set(out.modality_losses) == {"spikes", "pupil_diameter", "stimulus", "reward"}
    assert out.behavior_predictions["stimulus"].shape == (3, NUM_BINS, 4)
    with pytest.raises(ValueError, match=r"session s-b: trial lacks behaviour field 'reward'"):
        DataCollatorForNedsMasking(custom)(
            [{k: v for k, v in examples[0].items() if k != "reward"}]
        )


def test_seeded_reproducibility():
    examples = trials(8)
    first = DataCollatorForNedsMasking(config(), seed=123)(examples)
    second = DataCollatorForNedsMasking(config(), seed=123)(examples)
    other = DataCollatorForNedsMasking(config(), seed=124)(examples)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not all(torch.equal(first[n], other[n]) for n in ("spike_mask", "behavior_mask"))
    generator = torch.Generator().manual_seed(5)
    shared = DataCollatorForNedsMasking(config(), generator=generator)
    draws = [shared(examples)["spike_mask"] for _ in range(2)]
    assert not torch.equal(*draws)  # the generator advances between batches


def test_masks_do_not_depend_on_the_number_of_threads():
    # 2000 neurons x 20 bins: each trial's mask rows are large enough for torch's intra-op pool
    wide = {"wide": 2000, "s-a": 6}
    wide_config = config(sessions=wide)
    rng = np.random.default_rng(0)
    examples = [
        {
            "session_id": session_id,
            "spikes": rng.poisson(1.0, (wide[session_id], NUM_BINS)).astype(np.int64),
            "wheel_speed": rng.uniform(0, 4, NUM_BINS),
            "whisker_motion_energy": rng.uniform(1, 3, NUM_BINS),
            "choice": int(rng.integers(2)),
            "block": int(rng.integers(3)),
        }
        for session_id in ["wide", "s-a"] * 4
    ]
    threads = torch.get_num_threads()
    batches = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            collator = DataCollatorForNedsMasking(wide_config, seed=11)
            batches.append([collator(examples) for _ in range(3)])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*batches):
        assert one.keys() == two.keys()
        for name in one:
            assert torch.equal(one[name], two[name]), name
    assert batches[0][0]["spike_mask"][::2, :, :2000].any()  # the wide trials are masked


def classify(batch, sample: int, counts: list[int]) -> str:
    """Recover which NEDS scheme produced a sample's masks."""
    real = counts[batch["session_index"][sample]]
    spike = batch["spike_mask"][sample, :, :real]
    behavior = batch["behavior_mask"][sample]
    trial_tokens = behavior[0, 2:]
    continuous = behavior[:, :2]
    if spike.all() and not behavior.any():
        return "neural"
    if not spike.any() and continuous.all() and trial_tokens.all():
        return "behavior"
    if spike.any() and not behavior.any():
        return "within_spikes"
    if not spike.any():
        return "within_behavior"
    bins = spike[:, 0]
    assert torch.equal(spike, bins.unsqueeze(-1).expand_as(spike))
    assert torch.equal(continuous[:, 0], bins) and torch.equal(continuous[:, 1], bins)
    return "cross_modal"


def test_scheme_frequencies_and_mask_ratio_match_configuration():
    probabilities = {
        "neural": 0.1,
        "behavior": 0.2,
        "within_spikes": 0.3,
        "within_behavior": 0.15,
        "cross_modal": 0.25,
    }
    collator = DataCollatorForNedsMasking(
        config(), schemes=probabilities, mask_ratio=0.25, seed=7, return_scheme_index=True
    )
    counts = list(SESSIONS.values())
    tally = dict.fromkeys(probabilities, 0)
    ratios: dict[str, list[float]] = {"within_spikes": [], "cross_modal": [], "within_behavior": []}
    total = 0
    for draw in range(60):
        batch = collator(trials(32, seed=draw))
        for sample in range(32):
            scheme = collator.scheme_names[int(batch["scheme_index"][sample])]
            assert classify(batch, sample, counts) in (
                scheme,
                "within_spikes" if scheme == "cross_modal" else scheme,
            )
            tally[scheme] += 1
            if scheme in ("within_spikes", "cross_modal"):
                ratios[scheme].append(batch["spike_mask"][sample, :, 0].float().mean().item())
            if scheme == "within_behavior":
                ratios[scheme].append(batch["behavior_mask"][sample, :, :2].float().mean().item())
            total += 1
    # 1920 draws: a binomial proportion has sd <= 0.0115; allow 4 sd
    for scheme, probability in probabilities.items():
        assert abs(tally[scheme] / total - probability) < 0.046, (scheme, tally[scheme] / total)
    for scheme, values in ratios.items():
        assert abs(np.mean(values) - 0.25) < 0.02, (scheme, np.mean(values))


def test_evaluation_protocols_hide_exactly_what_they_should():
    examples = trials(4)
    counts = list(SESSIONS.values())
    encoding = DataCollatorForNedsMasking(config(), eval_protocol="encoding")(examples)
    decoding = DataCollatorForNedsMasking(config(), eval_protocol="decoding")(examples)
    wheel_only = DataCollatorForNedsMasking(config(), eval_protocol="encoding:wheel_speed")(
        examples
    )
    for sample in range(4):
        real = counts[encoding["session_index"][sample]]
        assert (
            encoding["spike_mask"][sample, :, :real].all()
            and not encoding["spike_mask"][sample, :, real:].any()
        )
        assert not encoding["behavior_mask"][sample].any()
        assert not decoding["spike_mask"][sample].any() and decoding["behavior_mask"][sample].all()
        assert wheel_only["spike_mask"][sample, :, :real].all()
        assert not wheel_only["behavior_mask"][sample, :, 0].any()
        assert wheel_only["behavior_mask"][sample, :, 1:].all()
    again = DataCollatorForNedsMasking(config(), eval_protocol="encoding", seed=99)(examples)
    assert torch.equal(again["spike_mask"], encoding["spike_mask"])
    with pytest.raises(ValueError, match="unknown behaviour 'pupil'"):
        DataCollatorForNedsMasking(config(), eval_protocol="encoding:pupil")


def test_mtm_schemes():
    collator = DataCollatorForNedsMasking(
        mtm_config(), neuron_regions=REGIONS, seed=3, return_scheme_index=True
    )
    seen = set()
    for draw in range(10):
        examples = trials(16, seed=draw, spike_only=True)
        batch = collator(examples)
        assert set(batch) >= {
            "spikes",
            "session_index",
            "spike_mask",
            "spike_target_mask",
            "prompt_index",
            "causal_attention",
        }
        for sample in range(16):
            scheme = collator.scheme_names[int(batch["scheme_index"][sample])]
            seen.add(scheme)
            session = examples[sample]["session_id"]
            regions = np.array(REGIONS[session])
            real = len(regions)
            hidden = batch["spike_mask"][sample, :, :real].numpy()
            target = batch["spike_target_mask"][sample, :, :real].numpy()
            assert batch["prompt_index"][sample] == mtm_config().prompt_schemes.index(scheme)
            assert bool(batch["causal_attention"][sample]) == (scheme == "causal")
            if scheme == "neuron":
                assert (hidden == hidden[:1]).all() and hidden[0].any()  # whole neurons
                assert (target == hidden).all()
            elif scheme == "causal":
                assert (hidden == hidden[:, :1]).all()  # whole bins
            elif scheme == "inter_region":
                masked_regions = set(regions[hidden[0]])
                assert (
                    len(masked_regions) == 1
                    and hidden[0].sum() == (regions == next(iter(masked_regions))).sum()
                )
                assert (target == hidden).all()
            else:  # intra_region: all other regions hidden, targets inside one region only
                target_regions = set(regions[target[0]])
                assert len(target_regions) == 1
                inside = regions == next(iter(target_regions))
                assert hidden[0][~inside].all() and (target[0] <= hidden[0]).all()
                assert not target[0][~inside].any()
        model = NedsForMaskedModeling(mtm_config())
        assert torch.isfinite(model(**{k: v for k, v in batch.items() if k != "scheme_index"}).loss)
    assert seen == {"neuron", "causal", "intra_region", "inter_region"}


def test_causal_scheme_ratio():
    collator = DataCollatorForNedsMasking(mtm_config(), schemes={"causal": 1.0}, seed=0)
    fractions = [
        collator(trials(16, seed=s, spike_only=True))["spike_mask"][:, :, 0].float().mean().item()
        for s in range(20)
    ]
    assert abs(np.mean(fractions) - 0.6) < 0.03


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ex: ex.update(session_id="s-zzz"), r"session 's-zzz' is unknown"),
        (
            lambda ex: ex.update(spikes=np.zeros((6, NUM_BINS + 1))),
            r"s-a: spikes must be neuron-major \[N, T\] = \[6, 20\]",
        ),
        (lambda ex: ex.update(spikes=np.zeros((NUM_BINS, 6))), r"got shape \[20, 6\]"),
        (lambda ex: ex.pop("wheel_speed"), r"s-a: trial lacks behaviour field 'wheel_speed'"),
        (lambda ex: ex.update(block=3), r"s-a: block labels must lie in \[0, 3\), got \[3\]"),
        (lambda ex: ex.update(choice=[0, 1]), r"choice is trial-level and needs one label"),
    ],
)
def test_bad_examples_are_clear_errors(mutate, message):
    examples = trials(2)
    mutate(examples[0])
    with pytest.raises(ValueError, match=message):
        DataCollatorForNedsMasking(config())(examples)


def test_region_schemes_without_regions_and_bad_options():
    with pytest.raises(ValueError, match="neuron regions"):
        DataCollatorForNedsMasking(mtm_config(), schemes={"inter_region": 1.0})(
            trials(2, spike_only=True)
        )
    with pytest.raises(ValueError, match="unknown masking scheme 'random'"):
        DataCollatorForNedsMasking(config(), schemes={"random": 1.0})
    with pytest.raises(ValueError, match="needs behaviour modalities"):
        DataCollatorForNedsMasking(mtm_config(), schemes={"behavior": 1.0})
    with pytest.raises(ValueError, match="normalization constants for session 's-b'"):
        DataCollatorForNedsMasking(config(), normalization={"s-a": NORMALIZATION["s-a"]})(trials(2))
