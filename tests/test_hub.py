"""Hub publishing: model cards, uploads checked against recorded `HfApi` calls, and a real
download round trip through a local read-only Hub server (olah) on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, metadata_load

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.hub import (
    CARD_TAGS,
    MODEL_CARD_TEMPLATE,
    add_push_arguments,
    default_template_path,
    load_eval_results,
    push_model_to_hub,
    render_model_card,
    run_push,
    save_model_with_card,
    to_eval_results,
    validate_model_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = REPO_ROOT / "src"
SESSIONS = {"sess-a": 5, "sess-b": 7}
REPO_ID = "neds-org/neds-tiny"
DATASET_REPO_ID = "neds-org/neds-sessions"
EVAL_RESULTS = [
    {
        "task_type": "neural-encoding",
        "task_name": "neural encoding",
        "dataset_type": "neds-org/neds-sessions",
        "dataset_name": "NEDS sessions",
        "dataset_split": "test",
        "metric_type": "bits_per_spike",
        "metric_name": "bits per spike",
        "metric_value": 0.1234,
    },
    {
        "task_type": "behavior-decoding",
        "task_name": "behaviour decoding",
        "dataset_type": "neds-org/neds-sessions",
        "dataset_name": "NEDS sessions",
        "dataset_split": "test",
        "metric_type": "balanced_accuracy",
        "metric_name": "choice balanced accuracy",
        "metric_value": 0.75,
    },
    {
        "task_type": "behavior-decoding",
        "task_name": "behaviour decoding",
        "dataset_type": "neds-org/neds-sessions",
        "dataset_name": "NEDS sessions",
        "dataset_split": "test",
        "metric_type": "r2",
        "metric_name": "wheel speed R2",
        "metric_value": -0.5,
    },
]
TRAINING_CONFIG = {
    "mode": "pretrain",
    "learning_rate": 0.001,
    "weight_decay": 0.01,
    "num_epochs": 3,
    "sessions": list(SESSIONS),
    "masking": {"schemes": ["neural", "behavior"], "mask_ratio": 0.3},
}
REQUIRED_UPLOAD_FILES = {
    "README.md",
    "config.json",
    "configuration_neds.py",
    "model.safetensors",
    "modeling_neds.py",
}


def tiny_config(**overrides: Any) -> NedsConfig:
    """A small NEDS config (dropout off so outputs are deterministic)."""
    values: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=32,
        num_time_bins=10,
        spike_stitcher_size=8,
        sessions=dict(SESSIONS),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        embedding_dropout=0.0,
    )
    values.update(overrides)
    return NedsConfig(**values)


def tiny_model(**overrides: Any) -> NedsForMaskedModeling:
    """A seeded tiny model in eval mode."""
    torch.manual_seed(0)
    return NedsForMaskedModeling(tiny_config(**overrides)).eval()


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card, parsed with yaml.safe_load."""
    match = re.match(r"\A---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def fenced_blocks(text: str, language: str) -> list[str]:
    """Contents of the ```language fenced blocks of a Markdown text."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def assert_model_index_matches(metadata: dict[str, Any], eval_results: list[dict[str, Any]]):
    """The card's model-index holds exactly the given results, field by field."""
    (entry,) = metadata["model-index"]
    assert entry["name"] == REPO_ID.split("/")[1]
    flattened = [
        {
            "task_type": result["task"]["type"],
            "task_name": result["task"]["name"],
            "dataset_type": result["dataset"]["type"],
            "dataset_name": result["dataset"]["name"],
            "dataset_split": result["dataset"]["split"],
            "metric_type": metric["type"],
            "metric_name": metric["name"],
            "metric_value": metric["value"],
        }
        for result in entry["results"]
        for metric in result["metrics"]
    ]
    assert flattened == eval_results
    # one model-index result per (task type, dataset, split)
    groups = {(r["task_type"], r["dataset_type"], r["dataset_split"]) for r in eval_results}
    assert len(entry["results"]) == len(groups)


# =============================================================================================
# Card template and rendering
# =============================================================================================


def test_template_copies_are_identical_and_package_copy_is_default():
    source_copy = REPO_ROOT / "model_cards" / MODEL_CARD_TEMPLATE
    package_copy = SRC_DIR / "neds_hf" / "templates" / MODEL_CARD_TEMPLATE
    assert source_copy.read_bytes() == package_copy.read_bytes()
    assert default_template_path().resolve() == package_copy.resolve()


def test_render_model_card_metadata_and_body():
    model = tiny_model()
    card = render_model_card(
        model,
        repo_id=REPO_ID,
        eval_results=EVAL_RESULTS,
        datasets=[DATASET_REPO_ID],
        training_config=TRAINING_CONFIG,
        base_model="neds-org/neds-base",
    )
    metadata = front_matter(str(card))
    assert metadata["library_name"] == "transformers"
    assert metadata["license"] == "mit"
    assert metadata["pipeline_tag"] == "feature-extraction"
    assert set(CARD_TAGS) <= set(metadata["tags"])
    assert {"neuroscience", "neds", "ibl", "neuropixels", "multimodal"} <= set(metadata["tags"])
    assert metadata["datasets"] == [DATASET_REPO_ID]
    assert metadata["base_model"] == "neds-org/neds-base"
    assert_model_index_matches(metadata, EVAL_RESULTS)
    # huggingface_hub parses the same metadata back into EvalResult objects
    parsed = ModelCard(str(card)).data
    assert [r.metric_value for r in parsed.eval_results] == [0.1234, 0.75, -0.5]
    assert [r.task_name for r in parsed.eval_results] == [
        "neural encoding",
        "behaviour decoding",
        "behaviour decoding",
    ]

    body = card.text
    for session_id, n_neurons in SESSIONS.items():
        assert f"| `{session_id}` | {n_neurons} |" in body
    n_parameters = sum(p.numel() for p in model.parameters())
    assert f"**Parameters:** {n_parameters:,}" in body
    assert "| hidden size | 32 |" in body and "| transformer layers | 1 |" in body
    for name in ("spikes", "wheel_speed", "whisker_motion_energy", "choice", "block"):
        assert f"| `{name}` |" in body
    assert f'AutoModelForMaskedLM.from_pretrained("{REPO_ID}", trust_remote_code=True)' in body
    assert "predict_neural_activity" in body and "predict_behavior" in body
    (training_yaml,) = fenced_blocks(body, "yaml")
    assert yaml.safe_load(training_yaml) == TRAINING_CONFIG
    assert "| neural encoding | NEDS sessions (`neds-org/neds-sessions`) | test |" in body
    assert "| bits per spike | 0.1234 |" in body
    for section in ("## Intended use", "## Out-of-scope use", "## Limitations", "## Citation"):
        assert section in body
    (bibtex,) = fenced_blocks(body, "bibtex")
    assert "2504.08201" in bibtex and "2407.14668" in bibtex and "eLife" in bibtex
    assert bibtex.count("@") == 3
    # trained on real data (nothing says synthetic): no synthetic caveat
    assert "trained on synthetic data" not in body
    assert "synthetic-data" not in metadata["tags"]


def test_card_from_config_counts_parameters_and_flags_synthetic_training():
    config = tiny_config()
    card = render_model_card(config, repo_id=REPO_ID, datasets=["neds-org/neds-synthetic-corpus"])
    n_parameters = sum(p.numel() for p in NedsForMaskedModeling(config).parameters())
    assert f"**Parameters:** {n_parameters:,}" in card.text
    assert "**This checkpoint was trained on synthetic data**" in card.text
    assert "synthetic-data" in card.data.tags
    # no evaluation results: no model-index, and the body says so
    assert "model-index" not in front_matter(str(card))
    assert "No evaluation results were recorded" in card.text
    assert "No training configuration was recorded" in card.text
    explicit = render_model_card(
        config, repo_id=REPO_ID, synthetic_data=False, datasets=["neds-org/neds-synthetic-corpus"]
    )
    assert "trained on synthetic data" not in explicit.text


def test_card_for_spike_only_mtm_configuration():
    config = NedsConfig.for_mtm(
        sessions={"sess-a": 4},
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=16,
        num_hidden_layers=1,
        num_time_bins=6,
        spike_stitcher_size=8,
    )
    card = render_model_card(config, repo_id=REPO_ID)
    assert "mtm" in card.data.tags
    assert "spike-only configuration (MtM)" in card.text
    assert "predict_behavior" not in card.text
    assert "| prompt token | yes |" in card.text


def test_card_usage_code_runs(tmp_path):
    """The card's Python snippets, pointed at a local copy of the model, really run."""
    model_dir = tmp_path / "neds-tiny"
    model = tiny_model()
    model.save_pretrained(model_dir)
    card = render_model_card(model, repo_id=str(model_dir))
    blocks = fenced_blocks(card.text, "python")
    assert len(blocks) == 3
    script = tmp_path / "card_snippets.py"
    script.write_text(
        "\n".join(blocks)
        + textwrap.dedent(
            f"""
            assert tuple(rates.shape) == (1, {model.config.num_time_bins}, 5), rates.shape
            assert sorted(behavior) == sorted(
                ["wheel_speed", "whisker_motion_energy", "choice", "block"]
            )
            assert tuple(behavior["block"].shape) == (1, 3)
            print("snippets ok")
            """
        ),
        encoding="utf-8",
    )
    environment = dict(
        os.environ, PYTHONPATH=str(SRC_DIR), HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1"
    )
    completed = subprocess.run(
        [sys.executable, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "snippets ok" in completed.stdout


def test_eval_results_are_validated():
    (result,) = to_eval_results(EVAL_RESULTS[:1])
    assert result.metric_value == 0.1234 and result.task_name == "neural encoding"
    with pytest.raises(
        ValueError, match=r"eval_results\[0\] lacks required keys \['metric_type'\]"
    ):
        to_eval_results([{k: v for k, v in EVAL_RESULTS[0].items() if k != "metric_type"}])
    with pytest.raises(ValueError, match=r"unknown keys \['metric_vlaue'\]"):
        to_eval_results([{**EVAL_RESULTS[0], "metric_vlaue": 1.0}])
    with pytest.raises(ValueError, match="finite number"):
        to_eval_results([{**EVAL_RESULTS[0], "metric_value": math.nan}])
    with pytest.raises(ValueError, match="list of dicts"):
        to_eval_results(EVAL_RESULTS[0])
    renamed = {**EVAL_RESULTS[2], "task_name": "wheel decoding"}
    with pytest.raises(
        ValueError,
        match=r"eval_results\[2\] and eval_results\[1\] share .* differ "
        r"in task_name",
    ):
        to_eval_results([*EVAL_RESULTS[:2], renamed])
    with pytest.raises(ValueError, match=r"eval_results\[3\] repeats eval_results\[2\]"):
        to_eval_results([*EVAL_RESULTS, {**EVAL_RESULTS[2], "metric_value": 0.1}])


def test_load_eval_results_from_file_and_string(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"eval_results": EVAL_RESULTS}), encoding="utf-8")
    assert load_eval_results(path) == EVAL_RESULTS
    assert load_eval_results(json.dumps(EVAL_RESULTS)) == EVAL_RESULTS
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_eval_results(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_eval_results("[{oops")
    with pytest.raises(ValueError, match="lacks required keys"):
        load_eval_results('[{"task_type": "x"}]')


def test_save_model_with_card_writes_everything(tmp_path):
    model = tiny_model()
    output_dir = save_model_with_card(
        model,
        tmp_path / "out",
        repo_id=REPO_ID,
        eval_results=EVAL_RESULTS,
        datasets=[DATASET_REPO_ID],
        training_config=TRAINING_CONFIG,
    )
    names = {path.name for path in output_dir.iterdir()}
    assert names == REQUIRED_UPLOAD_FILES | {"training_config.yaml", "eval_results.json"}
    assert yaml.safe_load((output_dir / "training_config.yaml").read_text()) == TRAINING_CONFIG
    assert json.loads((output_dir / "eval_results.json").read_text()) == {
        "eval_results": EVAL_RESULTS
    }
    assert_model_index_matches(metadata_load(output_dir / "README.md"), EVAL_RESULTS)
    # saving again without results or training config removes the stale side files
    save_model_with_card(model, output_dir, repo_id=REPO_ID)
    assert {path.name for path in output_dir.iterdir()} == REQUIRED_UPLOAD_FILES
    assert "model-index" not in front_matter((output_dir / "README.md").read_text())
    reloaded = NedsForMaskedModeling.from_pretrained(output_dir)
    inputs = model.dummy_inputs
    assert torch.equal(model(**inputs).spike_log_rates, reloaded(**inputs).spike_log_rates)


# =============================================================================================
# Uploads against recorded HfApi calls
# =============================================================================================


class RecordedHub:
    """Patches `HfApi.create_repo` / `HfApi.upload_folder` and records what they were given,
    including the folder's files and README.md as they were at upload time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded_files: dict[str, bytes] = {}

    def create_repo(self, api: HfApi, repo_id: str, **kwargs: Any) -> Any:
        self.calls.append(("create_repo", {"repo_id": repo_id, "token": api.token, **kwargs}))
        return mock.MagicMock(repo_id=repo_id)

    def upload_folder(self, api: HfApi, **kwargs: Any) -> Any:
        self.calls.append(("upload_folder", {"token": api.token, **kwargs}))
        folder = Path(kwargs["folder_path"])
        self.uploaded_files = {
            str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        return mock.MagicMock(
            commit_url=f"https://hub.test/{kwargs['repo_id']}/commit/{'0' * 40}", oid="0" * 40
        )

    def __enter__(self) -> RecordedHub:
        self._patches = [
            mock.patch.object(HfApi, "create_repo", autospec=True, side_effect=self.create_repo),
            mock.patch.object(
                HfApi, "upload_folder", autospec=True, side_effect=self.upload_folder
            ),
            mock.patch.object(
                HfApi,
                "create_commit",
                autospec=True,
                side_effect=AssertionError("push must go through upload_folder"),
            ),
        ]
        for patcher in self._patches:
            patcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for patcher in reversed(self._patches):
            patcher.stop()

    @property
    def readme(self) -> str:
        return self.uploaded_files["README.md"].decode("utf-8")


@pytest.fixture
def saved_model_dir(tmp_path) -> Path:
    """A model saved with its card, datasets and training configuration."""
    return save_model_with_card(
        tiny_model(),
        tmp_path / "neds-tiny",
        repo_id=REPO_ID,
        datasets=[DATASET_REPO_ID],
        training_config=TRAINING_CONFIG,
    )


def test_push_uploads_complete_folder_with_valid_card(saved_model_dir, tmp_path):
    with RecordedHub() as hub:
        commit = push_model_to_hub(
            saved_model_dir,
            REPO_ID,
            token="hf_test_token",
            private=True,
            commit_message="Add tiny NEDS",
            eval_results=EVAL_RESULTS,
        )
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    create_kwargs, upload_kwargs = hub.calls[0][1], hub.calls[1][1]
    assert create_kwargs == {
        "repo_id": REPO_ID,
        "token": "hf_test_token",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload_kwargs["repo_id"] == REPO_ID
    assert upload_kwargs["repo_type"] == "model"
    assert upload_kwargs["commit_message"] == "Add tiny NEDS"
    assert upload_kwargs["token"] == "hf_test_token"
    assert Path(upload_kwargs["folder_path"]) == saved_model_dir
    assert commit.commit_url.endswith("/commit/" + "0" * 40)

    assert REQUIRED_UPLOAD_FILES <= set(hub.uploaded_files)
    config = json.loads(hub.uploaded_files["config.json"])
    assert config["model_type"] == "neds"
    assert config["auto_map"]["AutoModel"] == "modeling_neds.NedsModel"
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_neds.NedsForMaskedModeling"
    assert (
        hub.uploaded_files["modeling_neds.py"]
        == (SRC_DIR / "neds_hf" / "modeling_neds.py").read_bytes()
    )

    # the card: valid YAML for yaml.safe_load and for huggingface_hub, model-index = results
    metadata = front_matter(hub.readme)
    assert metadata["datasets"] == [DATASET_REPO_ID]  # kept from the card written at save time
    assert_model_index_matches(metadata, EVAL_RESULTS)
    readme_path = tmp_path / "uploaded_README.md"
    readme_path.write_text(hub.readme, encoding="utf-8")
    assert metadata_load(readme_path) == metadata
    card = ModelCard.load(readme_path)
    assert [r.metric_type for r in card.data.eval_results] == [
        "bits_per_spike",
        "balanced_accuracy",
        "r2",
    ]
    assert card.data.library_name == "transformers"
    (training_yaml,) = fenced_blocks(card.text, "yaml")
    assert yaml.safe_load(training_yaml) == TRAINING_CONFIG  # read back from training_config.yaml
    assert json.loads(hub.uploaded_files["eval_results.json"]) == {"eval_results": EVAL_RESULTS}


def test_push_renders_card_when_missing(tmp_path):
    model_dir = tmp_path / "plain"
    tiny_model().save_pretrained(model_dir)
    assert not (model_dir / "README.md").exists()
    with RecordedHub() as hub:
        push_model_to_hub(model_dir, "other-org/neds-plain")
    assert hub.calls[0][1]["private"] is False
    assert hub.calls[1][1]["commit_message"] == "Upload NEDS model"
    assert REQUIRED_UPLOAD_FILES <= set(hub.uploaded_files)
    assert 'from_pretrained("other-org/neds-plain", trust_remote_code=True)' in hub.readme
    assert "model-index" not in front_matter(hub.readme)
    assert (model_dir / "README.md").read_text(encoding="utf-8") == hub.readme


def test_push_keeps_a_handwritten_card_and_rerenders_a_card_for_another_repo(
    saved_model_dir,
):
    with RecordedHub() as hub:
        push_model_to_hub(saved_model_dir, "neds-org/renamed")
    assert 'from_pretrained("neds-org/renamed"' in hub.readme  # NEDS card for REPO_ID: redone
    assert yaml.safe_load(fenced_blocks(hub.readme, "yaml")[0]) == TRAINING_CONFIG

    handwritten = "---\nlicense: mit\nlibrary_name: transformers\n---\n# My own card\n"
    (saved_model_dir / "README.md").write_text(handwritten, encoding="utf-8")
    with RecordedHub() as hub:
        push_model_to_hub(saved_model_dir, REPO_ID)
    assert hub.readme == handwritten


@pytest.mark.parametrize(
    "missing", ["config.json", "model.safetensors", "configuration_neds.py", "modeling_neds.py"]
)
def test_push_missing_file_is_an_error_before_any_api_call(saved_model_dir, missing):
    (saved_model_dir / missing).unlink()
    with RecordedHub() as hub, pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        push_model_to_hub(saved_model_dir, REPO_ID, eval_results=EVAL_RESULTS)
    assert hub.calls == []


def test_push_rejects_wrong_model_type_and_bad_repo_id(saved_model_dir, tmp_path):
    with RecordedHub() as hub:
        with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
            push_model_to_hub(saved_model_dir, "no-org")
        config_path = saved_model_dir / "config.json"
        config = json.loads(config_path.read_text())
        config["model_type"] = "bert"
        config_path.write_text(json.dumps(config))
        with pytest.raises(ValueError, match=r"model_type must be 'neds', got 'bert'"):
            push_model_to_hub(saved_model_dir, REPO_ID)
        with pytest.raises(FileNotFoundError, match="model directory not found"):
            push_model_to_hub(tmp_path / "nowhere", REPO_ID)
    assert hub.calls == []


def test_sharded_checkpoints_are_validated(tmp_path):
    model_dir = tmp_path / "sharded"
    tiny_model().save_pretrained(model_dir, max_shard_size="20KB")
    shards = sorted(model_dir.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and not (model_dir / "model.safetensors").exists()
    assert validate_model_dir(model_dir).sessions == SESSIONS
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(shards[-1].name)):
        validate_model_dir(model_dir)


def test_cli_push_records_the_same_calls(saved_model_dir, tmp_path, capsys):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(EVAL_RESULTS), encoding="utf-8")
    parser = add_push_arguments(argparse.ArgumentParser(prog="neds-hf push"))
    assert "Upload a saved NEDS model directory" in parser.format_help()
    args = parser.parse_args(
        [
            str(saved_model_dir),
            "--repo-id",
            REPO_ID,
            "--private",
            "--token",
            "hf_cli",
            "--commit-message",
            "cli upload",
            "--eval-results",
            str(results_path),
        ]
    )
    with RecordedHub() as hub:
        assert run_push(args) == 0
    assert hub.calls[0][1] == {
        "repo_id": REPO_ID,
        "token": "hf_cli",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert hub.calls[1][1]["commit_message"] == "cli upload"
    assert_model_index_matches(front_matter(hub.readme), EVAL_RESULTS)
    assert f"pushed {saved_model_dir} to {REPO_ID}: https://hub.test/" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args([str(saved_model_dir)])  # --repo-id is required


def test_transformers_push_to_hub_works_with_the_model():
    """transformers' own `push_to_hub`, mocked at the HfApi layer, uploads our files."""
    operations: list[Any] = []

    def record_commit(api: HfApi, *args: Any, **kwargs: Any) -> Any:
        operations.extend(kwargs["operations"])
        return mock.MagicMock(oid="0" * 40)

    with (
        mock.patch.object(
            HfApi, "create_repo", return_value=mock.MagicMock(repo_id=REPO_ID)
        ) as create_repo,
        mock.patch.object(HfApi, "create_commit", autospec=True, side_effect=record_commit),
        mock.patch(
            "transformers.utils.hub.create_and_tag_model_card",
            side_effect=lambda repo_id, tags, token=None: render_model_card(
                tiny_config(), repo_id=repo_id
            ),
        ),
    ):
        tiny_model().push_to_hub(REPO_ID, token="hf_fake")
    create_repo.assert_called_with(REPO_ID, private=None, token="hf_fake", exist_ok=True)
    paths = sorted(op.path_in_repo for op in operations)
    assert {"README.md", "config.json", "model.safetensors"} <= set(paths)
    # transformers uploads the remote-code files too, since auto_map points at them
    assert {"configuration_neds.py", "modeling_neds.py"} <= set(paths)


# =============================================================================================
# Real download round trip through olah (read-only local Hub) on 127.0.0.1
# =============================================================================================

OLAH_VERSION = "0.5.4"
OLAH_INSTALL_TIMEOUT_S = 300
OLAH_READY_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 240
_REGISTRY_UNREACHABLE = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
)


def _has_olah(python: Path) -> bool:
    """Whether a venv's python imports the pinned olah version."""
    if not python.is_file():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('olah'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return probe.returncode == 0 and probe.stdout.strip() == OLAH_VERSION


def _olah_venv_python() -> Path:
    """Python of a virtualenv with olah, never the project's own venv: $NEDS_OLAH_VENV, or
    <repo>/.venv-olah, created there with pip (bounded in time) when absent."""
    configured = os.environ.get("NEDS_OLAH_VENV")
    venv = Path(configured) if configured else REPO_ROOT / ".venv-olah"
    python = venv / "bin" / "python"
    if _has_olah(python):
        return python
    if configured and venv.exists():
        pytest.fail(f"NEDS_OLAH_VENV={venv} exists but has no olah=={OLAH_VERSION}")
    if venv.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted install
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    try:
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"olah=={OLAH_VERSION}"],
            capture_output=True,
            text=True,
            timeout=OLAH_INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(
            f"pip install olah=={OLAH_VERSION} did not finish within "
            f"{OLAH_INSTALL_TIMEOUT_S} s (package registry unreachable or too slow)"
        )
    if install.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        output = (install.stdout + install.stderr).strip()
        if any(phrase in output for phrase in _REGISTRY_UNREACHABLE):
            pytest.skip(
                f"pip install olah=={OLAH_VERSION} failed, registry unreachable: {output[-800:]}"
            )
        pytest.fail(f"pip install olah=={OLAH_VERSION} failed: {output[-2000:]}")
    if not _has_olah(python):
        pytest.fail(f"olah=={OLAH_VERSION} installed into {venv} but does not import")
    return python


def _git_commit_all(repo_dir: Path) -> None:
    """Make a folder a git repository with one commit of plain blobs (olah serves these)."""
    git = [
        "git",
        "-c",
        "user.email=neds@localhost",
        "-c",
        "user.name=neds",
        "-c",
        "init.defaultBranch=main",
        "-c",
        "commit.gpgsign=false",
    ]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *command], cwd=repo_dir, check=True, capture_output=True)


def _write_dataset_repo(dataset_dir: Path) -> None:
    """A tiny Parquet dataset repo: an `all` config (train/test) and one per-session config."""
    import datasets

    features = datasets.Features(
        {
            "session_id": datasets.Value("string"),
            "trial_id": datasets.Value("int64"),
            "spikes": datasets.List(datasets.List(datasets.Value("float32"))),  # (N, T)
            "choice": datasets.Value("int64"),
        }
    )
    generator = torch.Generator().manual_seed(7)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for session_id, n_neurons in SESSIONS.items():
        for trial_id in range(5):
            counts = torch.poisson(torch.full((n_neurons, 10), 0.7), generator=generator)
            split = "test" if trial_id == 4 else "train"
            rows[split].append(
                {
                    "session_id": session_id,
                    "trial_id": trial_id,
                    "spikes": counts.tolist(),
                    "choice": trial_id % 2,
                }
            )
    (dataset_dir / "data" / "all").mkdir(parents=True)
    (dataset_dir / "data" / "sess-a").mkdir(parents=True)
    for split, split_rows in rows.items():
        table = datasets.Dataset.from_list(split_rows, features=features)
        table.to_parquet(str(dataset_dir / "data" / "all" / f"{split}-00000-of-00001.parquet"))
        table.filter(lambda row: row["session_id"] == "sess-a").to_parquet(
            str(dataset_dir / "data" / "sess-a" / f"{split}-00000-of-00001.parquet")
        )
    card = {
        "license": "cc-by-4.0",
        "configs": [
            {
                "config_name": "all",
                "default": True,
                "data_files": [
                    {"split": "train", "path": "data/all/train-*"},
                    {"split": "test", "path": "data/all/test-*"},
                ],
            },
            {
                "config_name": "sess-a",
                "data_files": [
                    {"split": "train", "path": "data/sess-a/train-*"},
                    {"split": "test", "path": "data/sess-a/test-*"},
                ],
            },
        ],
    }
    (dataset_dir / "README.md").write_text(
        "---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n# Tiny NEDS sessions\n",
        encoding="utf-8",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def olah_hub(tmp_path):
    """A read-only olah Hub on 127.0.0.1 serving a model repo and a dataset repo from git.

    Yields (endpoint, local model dir, local dataset dir); the server is killed in teardown.
    """
    olah_python = _olah_venv_python()
    mirrors = tmp_path / "mirrors"
    model_dir = mirrors / "models" / REPO_ID
    dataset_dir = mirrors / "datasets" / DATASET_REPO_ID
    save_model_with_card(
        tiny_model(),
        model_dir,
        repo_id=REPO_ID,
        datasets=[DATASET_REPO_ID],
        eval_results=EVAL_RESULTS,
    )
    dataset_dir.mkdir(parents=True)
    _write_dataset_repo(dataset_dir)
    for repo_dir in (model_dir, dataset_dir):
        _git_commit_all(repo_dir)

    port = _free_port()
    server_dir = tmp_path / "olah"
    (server_dir / "repos").mkdir(parents=True)
    (server_dir / "olah.toml").write_text(
        textwrap.dedent(
            f"""
            [basic]
            host = "127.0.0.1"
            port = {port}
            mirror-netloc = "127.0.0.1:{port}"
            mirror-lfs-netloc = "127.0.0.1:{port}"
            repos-path = "{server_dir / "repos"}"
            mirrors-path = ["{mirrors}"]

            [accessibility]
            offline = true
            """
        ),
        encoding="utf-8",
    )
    log_file = (server_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [
            str(olah_python),
            "-m",
            "olah.server",
            "-c",
            str(server_dir / "olah.toml"),
            "--log-path",
            str(server_dir / "logs"),
        ],
        cwd=server_dir,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + OLAH_READY_TIMEOUT_S
        probe_url = f"{endpoint}/api/models/{REPO_ID}/revision/main"
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"olah exited with {server.returncode}: "
                    f"{(server_dir / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(probe_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"olah not ready within {OLAH_READY_TIMEOUT_S} s: "
                    f"{(server_dir / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield endpoint, model_dir, dataset_dir, server_dir / "server.log"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log_file.close()


_HUB_CLIENT = '''
"""Loads the model and the dataset by repo id from HF_ENDPOINT, without neds_hf."""
import json, sys
sys.modules["neds_hf"] = None  # `import neds_hf` fails here: only the Hub's code may be used
import torch
torch.set_num_threads(1)
import datasets
from huggingface_hub import constants, hf_hub_download
from transformers import AutoModel, AutoModelForMaskedLM

endpoint, model_repo, dataset_repo, inputs_path, output_dir = sys.argv[1:]
assert constants.ENDPOINT == endpoint, constants.ENDPOINT
inputs = torch.load(inputs_path)
model = AutoModelForMaskedLM.from_pretrained(model_repo, trust_remote_code=True)
backbone = AutoModel.from_pretrained(model_repo, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert not model.training and not backbone.training
with torch.no_grad():
    outputs = model(**inputs)
    hidden = backbone(**inputs).last_hidden_state
torch.save(
    {"spike_log_rates": outputs.spike_log_rates,
     "behavior_predictions": dict(outputs.behavior_predictions),
     "last_hidden_state": hidden,
     "model_class": type(model).__name__, "backbone_class": type(backbone).__name__},
    f"{output_dir}/outputs.pt",
)
readme = hf_hub_download(model_repo, "README.md")
rows = {}
for config_name in ("all", "sess-a"):
    dataset = datasets.load_dataset(dataset_repo, None if config_name == "all" else config_name)
    rows[config_name] = {split: dataset[split].to_list() for split in dataset}
default = datasets.load_dataset(dataset_repo, split="train")
rows["default_train_len"] = len(default)
with open(f"{output_dir}/rows.json", "w") as handle:
    json.dump({"rows": rows, "readme": open(readme, encoding="utf-8").read()}, handle)
print("hub client ok")
'''


@pytest.mark.network
def test_download_round_trip_through_local_hub(olah_hub, tmp_path):
    import datasets

    endpoint, model_dir, dataset_dir, server_log = olah_hub
    local_model = NedsForMaskedModeling.from_pretrained(model_dir).eval()
    inputs = local_model.dummy_inputs
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "hub_client.py").write_text(_HUB_CLIENT, encoding="utf-8")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and key != "PYTHONPATH"
    }
    environment.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    completed = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "hub_client.py"),
            endpoint,
            REPO_ID,
            DATASET_REPO_ID,
            str(tmp_path / "inputs.pt"),
            str(tmp_path),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert "hub client ok" in completed.stdout

    # the files really came from the server
    log = server_log.read_text(encoding="utf-8")
    assert f'"GET /{REPO_ID}/resolve/main/model.safetensors HTTP/1.1" 200' in log
    assert f'"GET /{REPO_ID}/resolve/main/modeling_neds.py HTTP/1.1" 200' in log
    assert re.search(
        rf'"GET /datasets/{DATASET_REPO_ID}/resolve/[0-9a-f]{{40}}/data/sess-a/'
        r'train-00000-of-00001.parquet HTTP/1.1" 200',
        log,
    )

    hub_outputs = torch.load(tmp_path / "outputs.pt")
    assert hub_outputs["model_class"] == "NedsForMaskedModeling"
    assert hub_outputs["backbone_class"] == "NedsModel"
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            local_outputs = local_model(**inputs)
            local_hidden = local_model.neds(**inputs).last_hidden_state
    finally:
        torch.set_num_threads(previous_threads)
    assert torch.equal(hub_outputs["spike_log_rates"], local_outputs.spike_log_rates)
    assert sorted(hub_outputs["behavior_predictions"]) == sorted(local_outputs.behavior_predictions)
    for name, prediction in local_outputs.behavior_predictions.items():
        assert torch.equal(hub_outputs["behavior_predictions"][name], prediction), name
    assert torch.equal(hub_outputs["last_hidden_state"], local_hidden)

    downloaded = json.loads((tmp_path / "rows.json").read_text())
    assert downloaded["readme"] == (model_dir / "README.md").read_text(encoding="utf-8")
    assert_model_index_matches(front_matter(downloaded["readme"]), EVAL_RESULTS)
    for config_name in ("all", "sess-a"):
        local = datasets.load_dataset(
            str(dataset_dir),
            None if config_name == "all" else config_name,
            cache_dir=str(tmp_path / "local_datasets_cache"),
        )
        assert sorted(downloaded["rows"][config_name]) == sorted(local) == ["test", "train"]
        for split in local:
            assert downloaded["rows"][config_name][split] == local[split].to_list()
    assert downloaded["rows"]["default_train_len"] == 8
    assert len(downloaded["rows"]["sess-a"]["train"]) == 4


def test_local_paths_are_not_hub_metadata(tmp_path):
    import yaml

    from neds_hf import NedsConfig
    from neds_hf.hub import is_hub_id, render_model_card

    assert (
        is_hub_id("org/neds-sessions") and not is_hub_id(str(tmp_path)) and not is_hub_id("./data")
    )
    config = NedsConfig(hidden_size=32, num_attention_heads=4, sessions={"s": 3})
    card = str(
        render_model_card(
            config, repo_id="me/m", datasets=["org/ds", str(tmp_path)], base_model=str(tmp_path)
        )
    )
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["datasets"] == ["org/ds"] and "base_model" not in metadata
    assert f"`{tmp_path}` (local)" in card and "https://huggingface.co/datasets/org/ds" in card
    assert f"https://huggingface.co/datasets/{tmp_path}" not in card
