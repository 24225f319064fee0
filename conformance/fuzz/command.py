"""The fuzz command: fuzz the selected losses on one backend and write a summary.

``command_fuzz(args, *, usage_error)`` takes the parsed options (backend,
loss, examples, seed, derandomize, out, progress, and optionally publish,
compiled, implementation and no_save) and returns the exit status: 0 when no
new counterexample was found, 1 when at least one was (each saved as a
regression case), 2 for a usage error reported through ``usage_error``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import losses

from .. import backend_loader
from ..environment import PROJECT_ROOT, environment_id

EXIT_OK, EXIT_COUNTEREXAMPLES, EXIT_USAGE = 0, 1, 2
SUMMARY_FORMAT = 1
# Top-level fields of a summary that describe the run that wrote it.
RUN_FIELDS = ("command", "created", "seconds", "seed", "examples_per_loss", "max_side", "derandomize", "load_average_after")


def _reject(usage_error, message: str) -> int:
    """Report a usage error through usage_error, which raises or returns; return EXIT_USAGE when it returns."""
    outcome = usage_error(message)
    if isinstance(outcome, BaseException):
        raise outcome
    return EXIT_USAGE


def _problem(args) -> str | None:
    """Say what is wrong with the options, or None."""
    known = backend_loader.known_backends()
    if args.backend not in known:
        return f"unknown backend {args.backend!r}; expected one of: {', '.join(known)}"
    hint = backend_loader.missing_framework(args.backend)
    if hint:
        return f"backend {args.backend!r} cannot run: {hint}"
    unknown = [name for name in (args.loss or []) if name not in losses.SPECS]
    if unknown:
        return f"unknown loss {', '.join(map(repr, unknown))}; expected one of: {', '.join(losses.SPECS)}"
    if isinstance(args.examples, bool) or not isinstance(args.examples, int) or args.examples < 1:
        return f"--examples {args.examples!r} is invalid; expected a positive number of examples per loss"
    max_side = getattr(args, "max_side", None)
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        return f"--max-side {max_side!r} is invalid; expected a positive number of elements per axis"
    if args.seed is not None and (isinstance(args.seed, bool) or not isinstance(args.seed, int) or args.seed < 0):
        return f"--seed {args.seed!r} is invalid; expected a non-negative integer"
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        return f"--out {args.out} is a file; expected a folder (it is created if missing)"
    return None


def command_fuzz(args, *, usage_error) -> int:
    """Fuzz each selected loss on args.backend; print a line per loss and write the summary where asked."""
    from . import runner  # Imports Hypothesis, which only the fuzz command needs.

    problem = _problem(args)
    if problem:
        return _reject(usage_error, problem)
    selected = tuple(args.loss) if args.loss else tuple(losses.SPECS)
    mode = "compiled" if getattr(args, "compiled", False) else "eager"
    implementations = getattr(args, "implementation", None) or None
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()

    from . import strategies

    strategies.SIDE_LIMIT = getattr(args, "max_side", None)
    worker = runner.load_worker(args.backend, selected, mode)
    unavailable = worker.runtime.unavailable_reason()
    if unavailable:
        return _reject(usage_error, f"backend {args.backend!r} cannot run: {unavailable}")
    if implementations:
        names = {impl.name for impl in worker.implementations if impl.loss in selected}
        unknown = sorted(set(implementations) - names)
        if unknown:
            return _reject(usage_error, f"unknown implementation {', '.join(map(repr, unknown))}; expected some of: {', '.join(sorted(names))}")

    started = time.perf_counter()
    results = []
    written = []
    for loss in selected:
        chosen = [impl.name for impl in worker.implementations if impl.loss == loss and (not implementations or impl.name in implementations)]
        if not chosen:
            print(f"lossparity fuzz: {loss}: no implementation selected in {args.backend}; skipped", file=sys.stderr)
            continue
        result = runner.fuzz(
            args.backend,
            loss,
            args.examples,
            seed=args.seed,
            derandomize=args.derandomize,
            progress=_progress_printer(show_progress),
            implementations=chosen,
            mode=mode,
            worker=worker,
            save=not getattr(args, "no_save", False),
        )
        result.regression = runner.replay_regressions(worker, loss, [impl for impl in worker.implementations if impl.name in chosen and impl.loss == loss], mode)
        results.append(result)
        _print_result(result)
        # The summary is rewritten after every loss, so an interrupted run keeps the losses it finished.
        written = _write_summaries(args, _summary(args, worker, results, time.perf_counter() - started, mode))

    for path in written:
        print(f"lossparity fuzz: wrote {path}", file=sys.stderr)
    new = sum(len(result.findings) for result in results)
    return EXIT_COUNTEREXAMPLES if new else EXIT_OK


def _write_summaries(args, summary: dict) -> list[Path]:
    """Write the summary to --out and, with --publish, to results/<environment-id>/fuzz/<backend>.json; return the paths."""
    written = []
    if args.out is not None:
        written.append(_write(Path(args.out) / f"fuzz-{args.backend}.json", summary, merge=False))
    if getattr(args, "publish", False):
        folder = PROJECT_ROOT / "results" / environment_id("cpu") / "fuzz"
        written.append(_write(folder / f"{args.backend}.json", summary, merge=True))
    return written


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    last = {"printed": 0.0}

    def show(state: dict) -> None:
        now = time.monotonic()
        if now - last["printed"] >= 5.0 or state["examples"] == state["total"]:
            last["printed"] = now
            print(f"  {state['loss']}: {state['examples']}/{state['total']} examples, {state['seconds']:.0f} s", file=sys.stderr, flush=True)

    return show


def _print_result(result) -> None:
    replay = result.regression
    line = (
        f"{result.loss}: {result.examples} examples in {result.seconds:.1f} s, "
        f"{len(result.findings)} counterexamples, {result.known} with known failures, "
        f"{replay.get('cases', 0)} regression cases replayed ({replay.get('failing', 0)} failing)"
    )
    print(line, flush=True)
    for finding in result.findings:
        error = "" if finding.max_abs_error is None else f", max abs error {finding.max_abs_error:.3g}"
        print(f"  {finding.kind}: {finding.implementation} {finding.check} {finding.status} in {finding.dtype} on {finding.case}{error}", flush=True)
        print(f"    {finding.detail[:300]}", flush=True)
        if finding.saved:
            print(f"    saved as {finding.saved}", flush=True)


def _summary(args, worker, results, seconds: float, mode: str) -> dict:
    import hypothesis

    per_loss = {}
    for result in results:
        entry = result.summary()
        entry["fixed_or_known"] = result.regression.get("passing", 0) + result.regression.get("known", 0)
        per_loss[result.loss] = entry
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    run = {
        "command": _command_line(),
        "created": created,
        "seconds": round(seconds, 1),
        "examples_per_loss": args.examples,
        "max_side": getattr(args, "max_side", None),
        "seed": args.seed,
        "losses": sorted(per_loss),
    }
    return {
        "format": SUMMARY_FORMAT,
        "backend": args.backend,
        "mode": mode,
        "runs": [run],
        "examples_per_loss": args.examples,
        "max_side": getattr(args, "max_side", None),
        "derandomize": bool(args.derandomize),
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "created": created,
        "command": run["command"],
        "versions": {**worker.runtime.versions(), "hypothesis": hypothesis.__version__},
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
        "losses": per_loss,
    }


def _write(path: Path, summary: dict, *, merge: bool) -> Path:
    """Write the summary as JSON; with merge, keep the entries of losses that this run did not fuzz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if merge and path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            print(f"lossparity fuzz: {path} is unreadable ({error}); it is replaced", file=sys.stderr)
            previous = {}
        if previous.get("format") == SUMMARY_FORMAT and previous.get("backend") == summary["backend"] and previous.get("mode") == summary["mode"]:
            earlier_losses = {loss: entry for loss, entry in previous.get("losses", {}).items() if loss not in summary["losses"]}
            summary = {**summary, "losses": {**earlier_losses, **summary["losses"]}, "runs": _merged_runs(previous, summary, earlier_losses)}
            if len(summary["runs"]) > 1:
                # The top level describes one run; with several, only "runs" does.
                summary = {key: value for key, value in summary.items() if key not in RUN_FIELDS}
    path.write_text(json.dumps(summary, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _merged_runs(previous: dict, summary: dict, earlier_losses: dict) -> list[dict]:
    """Return the runs whose losses the merged summary still contains, then this run: each loss names the run that fuzzed it."""
    earlier = previous.get("runs")
    if earlier is None:  # A summary written before runs were recorded: its top level describes one run.
        fields = ("command", "created", "seconds", "examples_per_loss", "seed")
        earlier = [{**{field: previous.get(field) for field in fields}, "losses": sorted(previous.get("losses", {}))}]
    runs = []
    for run in earlier:
        remaining = [loss for loss in run.get("losses", []) if loss in earlier_losses]
        if remaining:
            runs.append({**run, "losses": remaining})
    return runs + summary["runs"]


def _command_line() -> str:
    """Return the command as typed: lossparity fuzz ... or python -m conformance.fuzz ..."""
    arguments = " ".join(shlex.quote(part) for part in sys.argv[1:])
    if sys.argv[1:2] == ["fuzz"]:
        return "lossparity " + arguments
    return "python -m conformance.fuzz " + arguments


DESCRIPTION = "Fuzz the implementations of one backend against the spec with Hypothesis; save counterexamples as regression cases."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.fuzz", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fuzz command's options to parser (this module's own parser and lossparity fuzz share them)."""
    parser.add_argument("--backend", required=True, help="the backend to fuzz: torch, tensorflow, jax or numpy")
    parser.add_argument("--loss", action="append", help="a loss to fuzz; repeat for several (default: all)")
    parser.add_argument("--examples", type=int, default=200, help="examples per loss (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="the first Hypothesis seed (default: random, or 0 with --derandomize)")
    parser.add_argument("--derandomize", action="store_true", help="use a fixed seed, so two runs draw the same examples")
    parser.add_argument(
        "--max-side",
        dest="max_side",
        type=int,
        default=None,
        help="draw at most this many elements per axis, class counts and lengths included (default: the strategies' own limits, 5 to 8); "
        "a smaller limit means fewer shapes, and so fewer compilations on JAX",
    )
    parser.add_argument("--implementation", action="append", help="fuzz only this implementation name; repeat for several")
    parser.add_argument("--compiled", action="store_true", help="run every example compiled instead of eagerly (seconds per example)")
    parser.add_argument("--no-save", dest="no_save", action="store_true", help="do not write counterexamples to the regression folder")
    parser.add_argument("--out", default=None, help="a folder for the summary fuzz-<backend>.json")
    parser.add_argument("--publish", action="store_true", help="also write the summary to results/<environment-id>/fuzz/<backend>.json")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="print progress every 5 seconds")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never print progress")


class UsageError(Exception):
    pass


def _raise_usage_error(message: str):
    raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return command_fuzz(args, usage_error=_raise_usage_error)
    except UsageError as error:
        print(f"python -m conformance.fuzz: error: {error}", file=sys.stderr)
        return EXIT_USAGE
