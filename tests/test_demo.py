"""End-to-end test of ``neds-hf demo`` (``neds_hf.demo.run_demo``) with tiny sizes."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import yaml

from neds_hf.data.load import load_neurons
from neds_hf.demo import (
    FEATURE_PROBE_NAME,
    METHODS,
    TABLE_METRICS,
    TRUTH_PROBE_NAME,
    add_demo_arguments,
    prepare_output_dir,
    run_demo,
    run_demo_cli,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(
    n_sessions=3,
    n_heldout=1,
    n_trials=60,
    n_neurons=20,
    hidden_size=32,
    num_layers=1,
    pretrain_steps=16,
    finetune_steps=8,
    batch_size=16,
    seed=3,
    progress=False,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run shared by the assertions below."""
    output_dir = tmp_path_factory.mktemp("demo") / "out"
    results = run_demo(output_dir, **TINY)
    return output_dir, results


def _card_metadata(readme_text: str) -> dict:
    assert readme_text.startswith("---\n"), "the card must start with YAML front matter"
    return yaml.safe_load(readme_text.split("---\n")[1])


@pytest.mark.slow
def test_demo_writes_report_with_every_method(demo_run):
    output_dir, results = demo_run
    report_dir = output_dir / "report"

    table = (report_dir / "report.md").read_text()
    for header in TABLE_METRICS.values():
        assert header in table
    for label in METHODS.values():
        rows = [line for line in table.splitlines() if line.startswith(f"| {label} |")]
        assert len(rows) == 1, f"no table row for {label}"
        assert rows[0].count("|") == len(TABLE_METRICS) + 2
    assert "neds-hf demo --output" in table  # the reproduce command

    saved = json.loads((report_dir / "results.json").read_text())
    oracle_bps = saved["methods"]["oracle"]["average"]["bps"]
    assert math.isfinite(oracle_bps) and oracle_bps > 0
    assert saved["methods"]["oracle"]["average"]["bps_pooled"] > 0
    heldout = saved["sessions"]["heldout"]
    assert len(heldout) == 1 and len(saved["sessions"]["pretrain"]) == 2
    for method in ("neds_finetuned", "neds_scratch"):
        average = saved["methods"][method]["average"]
        for metric in TABLE_METRICS:
            assert isinstance(average[metric], float), (method, metric)
        assert set(saved["methods"][method]["per_session"]) == set(heldout)
    for metric in ("bps", "bps_pooled"):
        assert isinstance(saved["methods"]["linear_encoder"]["average"][metric], float)
    for metric in ("wheel_speed_r2", "whisker_motion_energy_r2", "choice_balanced_accuracy"):
        assert isinstance(saved["methods"]["linear_decoder"]["average"][metric], float)
    # the oracle is an upper bound for encoders on the same trials
    assert oracle_bps > saved["methods"]["linear_encoder"]["average"]["bps"]
    glm = saved["methods"]["poisson_glm"]["average"]
    assert math.isfinite(glm["bps"]) and glm["bps"] < oracle_bps
    assert glm["choice_balanced_accuracy"] is None
    # the region probe's baseline on simple per-neuron features, next to the embeddings'
    feature_probe = saved["region_probe"][FEATURE_PROBE_NAME]["region_cosmos"]
    assert 0 <= feature_probe["accuracy"] <= 1
    heldout_neurons = load_neurons(saved["paths"]["dataset"], heldout)
    assert feature_probe["n_neurons"] + feature_probe["n_neurons_dropped"] == len(heldout_neurons)
    assert FEATURE_PROBE_NAME in table
    # and on the generator's own parameters of the same neurons (synthetic data only)
    truth_probe = saved["region_probe"][TRUTH_PROBE_NAME]["region_cosmos"]
    assert truth_probe["n_neurons"] == feature_probe["n_neurons"]
    assert truth_probe["chance_accuracy"] == feature_probe["chance_accuracy"]
    assert TRUTH_PROBE_NAME in table
    # methods that do not apply are n/a (null in JSON)
    assert saved["methods"]["oracle"]["average"]["wheel_speed_r2"] is None
    assert saved["methods"]["linear_decoder"]["average"]["bps"] is None
    training = saved["training"]
    assert training["pretrain"]["global_step"] == TINY["pretrain_steps"]
    assert training["finetune"]["global_step"] == training["scratch"]["global_step"] == 8
    assert any("train/loss" in entry for entry in training["finetune"]["history"])
    assert {
        "synthetic_corpus",
        "dataset",
        "pretrain",
        "finetune",
        "scratch",
        "evaluate",
        "report",
        "total",
    } <= set(saved["timings_s"])
    assert results["methods"]["oracle"]["average"]["bps"] == pytest.approx(oracle_bps)

    for name in ("rates.png", "behavior.png", "training_curves.png"):
        data = (report_dir / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000, name


@pytest.mark.slow
def test_demo_model_card_carries_test_results(demo_run):
    output_dir, results = demo_run
    model_dir = output_dir / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    metadata = _card_metadata((model_dir / "README.md").read_text())
    entries = metadata["model-index"][0]["results"]
    values = {
        (entry["task"]["type"], metric["name"]): metric["value"]
        for entry in entries
        for metric in entry["metrics"]
    }
    average = results["methods"]["neds_finetuned"]["average"]
    assert values[("neural-encoding", "bits per spike")] == pytest.approx(average["bps"])
    assert values[("neural-decoding", "wheel speed R²")] == pytest.approx(average["wheel_speed_r2"])
    assert all(
        e["dataset"]["split"] == "test" and e["dataset"]["type"] == "neds-synthetic"
        for e in entries
    )

    from neds_hf import NedsForMaskedModeling

    model = NedsForMaskedModeling.from_pretrained(model_dir)
    assert model.config.session_ids == results["sessions"]["heldout"]


def test_existing_output_dir_needs_overwrite(tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(output_dir, **TINY)

    parser = add_demo_arguments(argparse.ArgumentParser())
    assert run_demo_cli(parser.parse_args(["--output", str(output_dir)])) == 2
    assert "already exists and is not empty" in capsys.readouterr().err

    (output_dir / "report").mkdir()
    (output_dir / "report" / "report.md").write_text("old")
    prepare_output_dir(output_dir, overwrite=True)
    assert not (output_dir / "report").exists()  # demo folders are replaced
    assert (output_dir / "keep.txt").read_text() == "user file"  # other files are kept


def test_bad_settings_are_rejected_before_writing(tmp_path):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="held-out session"):
        run_demo(output_dir, **{**TINY, "n_heldout": 3})
    with pytest.raises(ValueError, match="pretrain_steps must be >= 1"):
        run_demo(output_dir, **{**TINY, "pretrain_steps": 0})
    assert not output_dir.exists()


def _check_results_schema(saved: dict, heldout: list[str]) -> None:
    """The stable ``results`` block of results.json (RESULTS_SCHEMA_VERSION)."""
    from neds_hf.demo import RESULTS_SCHEMA_VERSION

    assert saved["schema_version"] == RESULTS_SCHEMA_VERSION == 1
    block = saved["results"]
    assert block["schema_version"] == 1
    assert block["metrics"] == list(TABLE_METRICS)
    assert set(block["per_session"]) == set(heldout)
    for session_id, entry in block["per_session"].items():
        sizes = entry["split_sizes"]
        assert set(sizes) == {"train", "validation", "test"}
        assert all(isinstance(n, int) and n > 0 for n in sizes.values()), sizes
        assert set(entry["scores"]) == set(block["methods"])
        for method, scores in entry["scores"].items():
            assert list(scores) == block["metrics"], (session_id, method)
            assert all(v is None or isinstance(v, float) for v in scores.values())
        for metric in TABLE_METRICS:  # NEDS is scored on every metric
            assert isinstance(entry["scores"]["neds_finetuned"][metric], float)
            neds = saved["methods"]["neds_finetuned"]["per_session"][session_id][metric]
            assert entry["scores"]["neds_finetuned"][metric] == pytest.approx(neds)
    average = block["average"]
    assert average["n_sessions"] == len(heldout)
    assert average["split_sizes"] == {
        split: sum(e["split_sizes"][split] for e in block["per_session"].values())
        for split in ("train", "validation", "test")
    }
    assert average["split_sizes"]["test"] == saved["n_test_trials"]
    assert average["scores"]["neds_scratch"]["bps"] == pytest.approx(
        saved["methods"]["neds_scratch"]["average"]["bps"]
    )


@pytest.mark.slow
def test_demo_results_schema(demo_run):
    _, results = demo_run
    _check_results_schema(results, results["sessions"]["heldout"])
    assert results["settings"]["preset"] == "realistic"  # the demo's default corpus


@pytest.mark.slow
def test_demo_on_own_one_cache(tmp_path, capsys):
    """--cache-dir / --eids-file / --heldout-eids on a tiny synthetic ONE cache whose second
    held-out session has no ground truth (so no oracle score there)."""
    from neds_hf.data.synthetic import GROUND_TRUTH_DIRNAME, make_synthetic_cache

    cache = tmp_path / "cache"
    eids = make_synthetic_cache(
        cache, 5, seed=5, n_trials=60, n_neurons_per_probe=20, first_block_trials=20
    )
    (cache / GROUND_TRUTH_DIRNAME / f"{eids[3]}.npz").unlink()
    eids_file = tmp_path / "eids.txt"
    eids_file.write_text("# my sessions\n" + "\n".join(eids) + "\n\n")
    output_dir = tmp_path / "out"
    argv = ["--output", str(output_dir), "--cache-dir", str(cache), "--eids-file"]
    argv += [str(eids_file), "--heldout-eids", f"{eids[3]},{eids[0]}", "--no-progress"]
    argv += ["--hidden-size", "32", "--pretrain-steps", "8", "--finetune-steps", "4"]
    parser = add_demo_arguments(argparse.ArgumentParser())
    assert run_demo_cli(parser.parse_args(argv)) == 0
    assert "Oracle" in capsys.readouterr().out
    saved = json.loads((output_dir / "report" / "results.json").read_text())
    # the held-out sessions as listed (not the default --heldout count), the others pretrain
    assert saved["sessions"]["heldout"] == [eids[3], eids[0]]
    assert saved["sessions"]["pretrain"] == [eids[1], eids[2], eids[4]]
    assert not (output_dir / "one_cache").exists()  # the user's cache is used in place
    _check_results_schema(saved, [eids[0], eids[3]])
    per_session = saved["results"]["per_session"]
    assert isinstance(per_session[eids[0]]["scores"]["oracle"]["bps"], float)
    assert per_session[eids[3]]["scores"]["oracle"]["bps"] is None
    assert any("no ground truth" in note for note in saved["notes"])
    # one held-out session lacks ground truth: no probe on the generator's parameters
    assert TRUTH_PROBE_NAME not in saved["region_probe"]
    assert any("generator's per-neuron parameters not run" in n for n in saved["notes"])
    command = saved["command"]
    assert f"--cache-dir {cache}" in command and f"--heldout-eids {eids[3]},{eids[0]}" in command
    assert (output_dir / "report" / "eids.txt").read_text().split() == eids


def test_own_sessions_options_are_checked(tmp_path, capsys):
    eids_file = tmp_path / "eids.txt"
    eids_file.write_text("a\nb\n")
    parser = add_demo_arguments(argparse.ArgumentParser())
    cases = {
        ("--heldout-eids", "a"): "need --cache-dir",
        ("--cache-dir", str(tmp_path), "--heldout-eids", "a"): "needs --eids-file",
        ("--cache-dir", str(tmp_path), "--eids-file", str(eids_file)): "--heldout-eids",
        ("--cache-dir", str(tmp_path), "--eids-file", str(eids_file), "--heldout-eids", "c"): (
            "['c'] are not in the eids file"
        ),
        ("--cache-dir", str(tmp_path), "--eids-file", str(eids_file), "--heldout-eids", "a,b"): (
            "none is left to pretrain"
        ),
        ("--cache-dir", str(tmp_path / "nope"), "--eids-file", str(eids_file)): "not a folder",
        ("--preset", "hard"): "preset must be one of",
    }
    for extra, message in cases.items():
        argv = ["--output", str(tmp_path / "out"), *extra]
        assert run_demo_cli(parser.parse_args(argv)) == 2, extra
        assert message in capsys.readouterr().err, extra
    inside = tmp_path / "out" / "one_cache"
    inside.mkdir(parents=True)
    argv = ["--output", str(tmp_path / "out"), "--cache-dir", str(inside), "--eids-file"]
    assert run_demo_cli(parser.parse_args([*argv, str(eids_file), "--heldout-eids", "a"])) == 2
    assert "lies in the demo folder" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report").exists()
    eids_file.write_text("a\na\n")
    argv = ["--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path), "--eids-file"]
    assert run_demo_cli(parser.parse_args([*argv, str(eids_file), "--heldout-eids", "a"])) == 2
    assert "more than once" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_cache"]
