"""``python -m conformance.sharded``: the sharded checks from the shell, with the options of command_sharded."""

from __future__ import annotations

import argparse
import sys

from .cases import BACKENDS, DTYPES, LOSSES
from .command import command_sharded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.sharded",
        description="Check vocabulary-parallel cross-entropy (PyTorch over gloo, JAX over CPU devices) against the unsharded spec.",
    )
    parser.add_argument("--loss", action="append", help=f"loss to check: {', '.join(LOSSES)} or all; repeat or comma-separate (default: all)")
    parser.add_argument("--backend", action="append", help=f"backend: {', '.join(BACKENDS)} or all; repeat or comma-separate (default: all)")
    parser.add_argument("--dtype", action="append", help=f"dtype: {', '.join(DTYPES)} or all; repeat or comma-separate (default: float32,bfloat16)")
    parser.add_argument("--world-size", action="append", help="world sizes, comma-separated or repeated, such as 1,2,4,8 (default: 1,2,4,8)")
    parser.add_argument("--out", help="folder to write sharded.json and sharded.md into")
    parser.add_argument("--publish", action="store_true", help="also write results/<environment id>/sharded.json and sharded.md")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per world-size job before its processes are killed (default: 600)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output on stdout (default: table)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="one line on stderr per job (default: on)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case inputs (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    args.command_line = "python -m conformance.sharded " + " ".join(argv)
    try:
        return command_sharded(args, usage_error=parser.error)
    except KeyboardInterrupt:
        print("interrupted; the worker processes were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
