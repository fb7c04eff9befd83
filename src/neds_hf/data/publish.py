"""Publishing a built NEDS dataset folder to a Hugging Face Hub dataset repository."""

from __future__ import annotations

import os
from pathlib import Path

from .load import verify_dataset

__all__ = ["push_dataset_to_hub"]


def push_dataset_to_hub(
    local_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload NEDS IBL dataset",
) -> str:
    """Upload a built dataset folder (Parquet, card, build report) to a Hub dataset repo.

    Creates the repo if needed (``exist_ok=True``) and uploads the folder in one commit;
    returns the commit URL. The folder is checked with :func:`~neds_hf.data.load.verify_dataset`
    first, so a damaged or incomplete dataset is never published.
    """
    from huggingface_hub import HfApi

    local_dir = Path(local_dir)
    verify_dataset(local_dir)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=os.fspath(local_dir),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=commit_message,
    )
    return str(getattr(commit, "commit_url", commit))
