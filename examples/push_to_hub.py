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

from neds_hf.hub import add_push_arguments, run_push


def main(argv: list[str] | None = None) -> int:
    """Check the folder and upload it; prints the commit URL and returns the exit code."""
    parser = argparse.ArgumentParser(
        epilog="The token comes from --token, else HF_TOKEN, else the stored `hf auth login` "
        "token; it needs write access to the repository's owner."
    )
    add_push_arguments(parser)
    return run_push(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
