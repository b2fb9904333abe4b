"""``python -m unlearnkit erase …``: convert, inspect, train and attack concept-erased text encoders."""
from __future__ import annotations

import argparse
import json
import logging

from ..textencoders.layouts import OUTPUT_LAYOUTS
from ..textencoders.loading import DTYPES, convert_text_encoder, load_text_encoder_state
from . import guarded as _guarded
from .erase_train import add_parsers as add_train_parsers

logger = logging.getLogger(__name__)


def _convert(args: argparse.Namespace) -> int:
    path, info = convert_text_encoder(
        args.src, args.out, overwrite=args.overwrite, prefix=args.prefix, dtype=args.dtype, layout=args.layout
    )
    print(json.dumps({"out": str(path), **info.to_dict()}))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    _, info = load_text_encoder_state(args.src, prefix=args.prefix, with_hash=args.hash)
    print(json.dumps(info.to_dict()))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``erase`` with its ``convert``, ``inspect``, ``train`` and ``attack`` subcommands."""
    erase = subparsers.add_parser("erase", help="AdvUnlearn: concept-erased text encoders")
    sub = erase.add_subparsers(dest="erase_command", required=True)

    convert = sub.add_parser(
        "convert",
        help="text encoder (HF folder, safetensors, .pt/.bin; any key layout) -> one HF-keyed safetensors",
    )
    convert.add_argument("src", help="HF CLIPTextModel folder or weight file")
    convert.add_argument("out", help="output .safetensors (never overwritten without --overwrite)")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.add_argument("--prefix", default=None, help="key prefix of the encoder when SRC holds several")
    convert.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast (default: keep)")
    convert.add_argument("--layout", choices=sorted(OUTPUT_LAYOUTS), default="hf", help="output key layout")
    convert.set_defaults(func=_guarded(_convert))

    inspect = sub.add_parser("inspect", help="detect layout and dims of a text encoder; print JSON")
    inspect.add_argument("src", help="HF CLIPTextModel folder or weight file")
    inspect.add_argument("--prefix", default=None, help="key prefix of the encoder when SRC holds several")
    inspect.add_argument("--hash", action="store_true", help="also compute the file's SHA-256")
    inspect.set_defaults(func=_guarded(_inspect))
    add_train_parsers(sub, _guarded)
    return erase
