"""Push a trained NEDS model folder to the Hugging Face Hub.

The folder is the ``model/`` directory a training run writes (``runs/NAME/model``): weights,
``config.json``, the code files that ``trust_remote_code=True`` loading needs, and a model card
(``README.md``). It is checked before anything is sent; the card is re-rendered for the target
repository when it was written for another one.

    python examples/push_to_hub.py runs/neds_finetune/model --repo-id ORG/neds-ibl-finetuned
    python examples/push_to_hub.py runs/synthetic_small/model --repo-id ME/neds-demo --private

Authentication: a token with write access to ORG, from (in this order) ``--token``, the
``HF_TOKEN`` environment variable, or the token stored by ``hf auth login``. Prefer
``HF_TOKEN`` / the stored login over ``--token``: a token on the command line ends up in the
shell history and the process list. ``HF_ENDPOINT`` points the upload at another Hub server.

Once pushed, anyone can load the model without installing neds_hf:

    from transformers import AutoModelForMaskedLM
    model = AutoModelForMaskedLM.from_pretrained("ORG/NAME", trust_remote_code=True)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the push example."""
    parser = argparse.ArgumentParser(
        description="Upload a trained NEDS model folder (weights, config, remote code, model "
        "card) to a Hugging Face Hub model repository, creating it if needed.",
        epilog="The token comes from --token, else HF_TOKEN, else the stored `hf auth login` "
        "token; it needs write access to the repository's owner. HF_ENDPOINT selects another "
        "Hub server.",
    )
    parser.add_argument("model_dir", type=Path, help="model folder, e.g. runs/NAME/model")
    parser.add_argument("--repo-id", required=True, help="target repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)"
    )
    parser.add_argument(
        "--commit-message", default="Upload NEDS model", help="message of the upload commit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Validate and upload; prints the commit URL and returns the exit code."""
    args = parse_args(argv)
    from neds_hf.hub import push_model_to_hub  # imported after parsing: --help stays fast

    try:
        commit = push_model_to_hub(
            args.model_dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"pushed {args.model_dir} to {args.repo_id}: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
