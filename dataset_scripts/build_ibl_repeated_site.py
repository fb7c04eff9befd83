"""Build the NEDS IBL repeated-site dataset from ONE and optionally push it to the Hub.

By default the session ids are the repeated-site list shipped with neds_hf
(``neds_hf/data/eids/repeated_site_eids.txt``); every ``neds-hf prepare-data`` option applies.

    python dataset_scripts/build_ibl_repeated_site.py --cache-dir ~/ibl_cache --online \\
        --output ibl_repeated_site --num-proc 4 --push-to-hub my-org/neds-ibl-repeated-site
"""

from __future__ import annotations

import argparse
import sys

from neds_hf.data import push_dataset_to_hub
from neds_hf.data.cli_prepare import (
    add_prepare_data_arguments,
    packaged_eids_file,
    run_prepare_data,
)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the dataset, push it when ``--push-to-hub`` is given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prepare_data_arguments(parser, eids_required=False)
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="Hub dataset repo to upload to")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the saved login)")
    args = parser.parse_args(argv)
    if not (args.eids or args.eids_file or args.tag):
        args.eids_file = str(packaged_eids_file("repeated_site"))
    status = run_prepare_data(args)
    if status != 0 or not args.push_to_hub:
        return status
    url = push_dataset_to_hub(args.output, args.push_to_hub, token=args.token, private=args.private)
    print(f"pushed {args.output} to {args.push_to_hub}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
