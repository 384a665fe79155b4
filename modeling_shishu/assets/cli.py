"""`shishu fetch-parent`: fetch and cache a parent checkpoint, print its folder."""

import argparse
import logging
import sys

from .cache import cache_dir
from .parents import DEFAULT_PARENT, PARENTS, fetch_parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "parent",
        nargs="?",
        default=DEFAULT_PARENT,
        metavar="NAME|PATH|HUB_ID",
        help=f"offline parent ({', '.join(PARENTS)}), a checkpoint directory, or a Hub id (default: {DEFAULT_PARENT})",
    )


def run(args: argparse.Namespace) -> int:
    # Progress goes to stderr; stdout carries only the folder path, so `$(shishu fetch-parent)` works.
    logger = logging.getLogger(__package__)  # the assets modules log below it
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shishu fetch-parent: %(message)s"))
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("cache: %s", cache_dir())
        folder = fetch_parent(args.parent)
    except RuntimeError as error:
        print(f"shishu fetch-parent: error: {error}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    print(folder)
    return 0
