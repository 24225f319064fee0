"""Command line: check the float64 spec against the 50-digit oracle and print the worst error per loss.

    python -m conformance.oracle [--loss L ...] [--max-elements N] [--json FILE]

The exit status is 1 when a loss exceeds its stated bound, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .run import BOUND_REASONS, run_oracle, worst_by_loss


def _format_ulp(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def format_table(summary: dict[str, dict]) -> str:
    """Return a Markdown table of the worst error per loss."""
    lines = [
        "| loss | worst ULP | worst finite ULP | bound | status | case | check | cases | checks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for loss, entry in summary.items():
        lines.append(
            f"| {loss} | {_format_ulp(entry['ulp'])} | {_format_ulp(entry['finite_ulp'])} | {entry['bound']:g} | {entry['status']} | "
            f"{entry['case']} | {entry['check']} | {entry['cases']} | {entry['checks']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.oracle", description=__doc__.splitlines()[0])
    parser.add_argument("--loss", action="append", dest="losses", metavar="L", help="check only this loss (repeatable; default: every loss)")
    parser.add_argument("--max-elements", type=int, default=2000, metavar="N", help="skip cases with more than N input elements (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cases (default 0)")
    parser.add_argument("--no-gradients", action="store_true", help="check values only")
    parser.add_argument("--json", metavar="FILE", help="write every record and the summary per loss to FILE as JSON")
    parser.add_argument("--quiet", action="store_true", help="print no progress lines")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    records = run_oracle(args.losses, seed=args.seed, max_elements=args.max_elements, gradients=not args.no_gradients, progress=progress)
    summary = worst_by_loss(records)
    elapsed = time.perf_counter() - started

    print(format_table(summary))
    failures = [record for record in records if record["status"] == "fail"]
    for record in failures:
        print(f"FAIL {record['loss']} / {record['case']} / {record['check']}: {_format_ulp(record['ulp'])} ULP > {record['bound']:g}; {record['detail']}")
    print(f"{len(records)} checks of {len(summary)} losses in {elapsed:.1f} s, {len(failures)} over their bound")

    if args.json:
        payload = {
            "records": [{**record, "ulp": None if math.isinf(record["ulp"]) else record["ulp"]} for record in records],
            "summary": {loss: {**entry, "ulp": None if math.isinf(entry["ulp"]) else entry["ulp"], "reason": BOUND_REASONS[loss]} for loss, entry in summary.items()},
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
