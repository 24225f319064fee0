"""The lossparity command line: list, explain, run and bench."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import losses

from . import backend_loader, report
from .dtypes import DTYPES
from .environment import PROJECT_ROOT, describe
from .worker import Selection

MODES = ("eager", "compiled")
GROUPS = ("small", "edge", "realistic", "regression", "bad-input", "gpu")
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
ORACLE_MAX_ELEMENTS = 2000
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C.


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class UsageError(Exception):
    """A bad command line; the CLI prints the message and exits with status 2."""


def _split(values: list[str] | None) -> list[str]:
    """Accept both repeated flags and comma-separated lists; an option given with no name is an error."""
    items = []
    for value in values or []:
        names = [item.strip() for item in value.split(",") if item.strip()]
        if not names:
            raise UsageError(f"an option was given the empty value {value!r}; expected one or more names, or all")
        items += names
    return items


def _choose(kind: str, requested: list[str], valid: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [item for item in requested if item not in valid and item != "all"]
    if unknown:
        raise UsageError(f"unknown {kind} {', '.join(map(repr, unknown))}; expected one of: {', '.join(valid)} or all")
    if not requested or "all" in requested:
        return default
    return tuple(dict.fromkeys(requested))


def _require_writable_folder(path: Path) -> None:
    """Fail before the run, not after it, when results could not be written to path."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; expected a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {path} cannot be created ({error.strerror}); expected a writable folder") from error
    if not os.access(path, os.W_OK):
        raise UsageError(f"--out {path} cannot be written; expected a writable folder")


def resolve_backends(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return the backends to run and, for 'all', those skipped because their framework is missing."""
    known = backend_loader.known_backends()
    _choose("backend", requested, known, known)  # Rejects unknown names, even beside "all".
    if not requested or "all" in requested:
        # The slowest backend starts first, so the others run beside it.
        chosen = [name for name in ("torch", "jax", "tensorflow", "numpy") if name in known]
        return chosen, {}
    chosen = list(_choose("backend", requested, known, known))
    for name in chosen:
        hint = backend_loader.missing_framework(name)
        if hint:
            raise UsageError(f"backend {name!r} cannot run: {hint}")
    return chosen, {}


def command_list(args) -> int:
    from .environment import source_hash

    print(f"Sources SHA-256 (compare with a results table's): {source_hash()}\n")
    print("Losses (spec in losses/):")
    for name, spec in losses.SPECS.items():
        print(f"  {name}: {spec.summary}")
    print("\nBackends:")
    for backend in backend_loader.known_backends():
        hint = backend_loader.missing_framework(backend)
        if hint:
            print(f"  {backend}: not installed ({hint})")
            continue
        try:
            implementations, runtime = backend_loader.load(backend, "cpu")
        except Exception as error:  # Listing must go on when one framework fails to import.
            print(f"  {backend}: failed to load ({type(error).__name__}: {error})")
            continue
        versions = ", ".join(f"{name} {version}" for name, version in runtime.versions().items())
        print(f"  {backend} ({versions}); modes: {', '.join(runtime.modes)}")
        for implementation in implementations:
            print(f"    {implementation.loss}: {implementation.name} [{implementation.kind}]")
    return EXIT_OK


def command_explain(args) -> int:
    spec = losses.SPECS.get(args.loss)
    if spec is None:
        raise UsageError(f"unknown loss {args.loss!r}; expected one of: {', '.join(losses.SPECS)}")
    print(f"{spec.name}{inspect.signature(spec.function)}\n")
    print(inspect.getdoc(spec.function))
    print(f"\nDifferentiable inputs: {', '.join(spec.differentiable)}")
    detached = [name for name in spec.tensor_args if name not in spec.differentiable]
    if detached:
        print(f"Not differentiated (every implementation must give zero gradient or none): {', '.join(detached)}")
    print("\nImplementations and how the built-ins differ from the spec:")
    for backend in backend_loader.known_backends():
        if backend_loader.missing_framework(backend):
            print(f"  {backend}: not installed")
            continue
        try:
            implementations, _ = backend_loader.load(backend, "cpu")
        except Exception as error:  # One broken framework must not hide the others.
            print(f"  {backend}: failed to load ({type(error).__name__}: {error})")
            continue
        for implementation in implementations:
            if implementation.loss != spec.name:
                continue
            print(f"  {backend}: {implementation.name} [{implementation.kind}]")
            if implementation.notes:
                print(f"      adapter: {implementation.notes}")
            for difference in implementation.differences:
                print(f"      difference {difference.name}: {difference.description}")
    return EXIT_OK


class _Progress:
    """A progress bar per backend on stderr, so --format json keeps stdout clean."""

    def __init__(self, backends: list[str], enabled: bool):
        self.enabled = enabled
        self.tasks = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
        )
        for backend in backends:
            self.tasks[backend] = self.progress.add_task(backend, total=None, status="waiting")

    def __enter__(self):
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()

    def update(self, run) -> None:
        bad = sum(1 for record in run.records if record["status"] in report.UNEXPECTED)
        if not self.enabled:
            # Without a terminal, one line per finished backend shows that the run moves.
            if run.finished and run.backend not in self.tasks:
                self.tasks[run.backend] = None
                state = f"not run: {run.unavailable}" if run.unavailable else f"{len(run.records)} results, {bad} unexpected"
                print(f"lossparity: {run.backend} finished ({state})", file=sys.stderr, flush=True)
            return
        if run.unavailable:
            status = f"not run: {run.unavailable}"
        elif run.finished:
            status = "done" + (f", {bad} unexpected" if bad else "")
        else:
            status = (run.current or {}).get("case", "starting") + (f" ({bad} unexpected)" if bad else "")
        self.progress.update(self.tasks[run.backend], total=run.total, completed=run.finished_units, status=status[:60])


def _compiled_entries(entries: list[str], selection: Selection) -> tuple[str, ...]:
    """Check --compiled-loss entries, each a loss name or loss:dtype, against the selected losses, dtypes and modes."""
    if "compiled" not in selection.modes:
        raise UsageError("--compiled-loss limits compiled mode, but --mode does not select it; add --mode compiled or drop --compiled-loss")
    for entry in entries:
        loss, _, dtype = entry.partition(":")
        if loss not in losses.SPECS:
            raise UsageError(f"--compiled-loss {entry!r} names the unknown loss {loss!r}; expected one of: {', '.join(losses.SPECS)}")
        if loss not in selection.losses:
            raise UsageError(f"--compiled-loss {entry!r} names {loss!r}, which --loss does not select; add it to --loss")
        if dtype and dtype not in DTYPES:
            raise UsageError(f"--compiled-loss {entry!r} names the unknown dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
        if dtype and dtype not in selection.dtypes:
            raise UsageError(f"--compiled-loss {entry!r} names {dtype!r}, which --dtype does not select; add it to --dtype")
    return tuple(dict.fromkeys(entries))


def command_run(args) -> int:
    if args.world_size is not None:
        return _run_sharded(args)
    backends, _ = resolve_backends(_split(args.backend))
    groups = _choose("case group", _split(args.group), GROUPS, ()) or None
    if groups and "gpu" in groups and args.device != "gpu":
        raise UsageError("the case group 'gpu' runs only with --device gpu")
    gpu = args.device == "gpu"
    if args.allow_tf32 and not gpu and not args.tf32_tier_on_cpu:
        raise UsageError("--allow-tf32 needs --device gpu: TF32 exists only on NVIDIA GPUs, so a CPU run of the TF32 tier would only loosen tolerances")
    if args.tf32_tier_on_cpu and args.publish:
        raise UsageError("--tf32-tier-on-cpu is for the harness's own tests, so its results cannot be published")
    # On a GPU the determinism and CPU comparison checks are on unless turned off.
    determinism = gpu if args.determinism is None else args.determinism
    compare_device = args.compare_device or ("cpu" if gpu and args.cpu_comparison is not False else None)
    if args.cpu_comparison and not gpu and not args.compare_device:
        raise UsageError("--cpu-comparison compares a GPU run with the CPU, so it needs --device gpu")
    allow_tf32 = args.allow_tf32 or args.tf32_tier_on_cpu
    selection = Selection(
        losses=_choose("loss", _split(args.loss), tuple(losses.SPECS), tuple(losses.SPECS)),
        dtypes=_choose("dtype", _split(args.dtype), DTYPES, DTYPES),
        modes=_choose("mode", _split(args.mode), MODES, MODES),
        groups=groups,
        seed=args.seed,
        allow_tf32=allow_tf32,
        determinism=determinism,
        compare_device=compare_device,
    )
    compiled_losses = _compiled_entries(_split(args.compiled_loss), selection) if args.compiled_loss else None
    selection.compiled_losses = compiled_losses
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} is invalid; expected a non-negative integer")
    subjects_filtered = bool(args.subject) and "all" not in _split(args.subject)
    filtered = any([args.loss, args.dtype, args.mode, args.group, args.compiled_loss, subjects_filtered]) or set(backends) != {"numpy", "torch", "tensorflow", "jax"}
    if args.publish and filtered:
        raise UsageError(
            "--publish replaces the published tables of this machine, so it needs the full run: "
            "drop --backend, --loss, --dtype, --mode, --group and --subject, or write elsewhere with --out DIR"
        )
    if args.out:
        _require_writable_folder(Path(args.out))
    if not 0 < args.timeout < float("inf"):  # Also rejects NaN, which would disable hang detection.
        raise UsageError(f"--timeout {args.timeout} is invalid; expected a positive, finite number of seconds")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} is invalid; expected at least 1")
    if args.memory_limit is not None and not 0 < args.memory_limit < float("inf"):
        raise UsageError(f"--memory-limit {args.memory_limit} is invalid; expected a positive, finite number of GiB")

    subject_runs = _plan_registered_subjects(args, backends, selection)
    return _run_and_report(args, selection, backends, subject_runs, allow_tf32=allow_tf32, determinism=determinism, compare_device=compare_device)


def _run_sharded(args) -> int:
    """Run the vocabulary-parallel checks at the --world-size sizes, with each world size's processes launched here."""
    from types import SimpleNamespace

    from .sharded.command import command_sharded

    ignored = [flag for flag, value in (("--group", args.group), ("--mode", args.mode), ("--compiled-loss", args.compiled_loss), ("--subject", args.subject), ("--resume", args.resume), ("--memory-limit", args.memory_limit)) if value]
    if ignored:
        raise UsageError(f"--world-size runs the sharded checks, which take no {', '.join(ignored)}; drop them")
    if args.device != "cpu":
        raise UsageError("--world-size runs on the CPU (gloo and host devices) only; drop --device gpu")
    sizes = _split([args.world_size])
    if not sizes:
        raise UsageError(f"--world-size {args.world_size!r} is invalid; expected sizes such as 4 or 1,2,4,8")
    for size in sizes:
        if not size.isdigit() or int(size) < 1:
            raise UsageError(f"--world-size {args.world_size!r} is invalid: {size!r} is not a positive integer")
    backends = [name for name in _split(args.backend) if name != "all"] or None
    sharded_args = SimpleNamespace(
        loss=_split(args.loss) or None,
        backend=backends,
        dtype=_split(args.dtype) or None,
        world_size=[int(size) for size in sizes],
        out=args.out,
        publish=args.publish,
        timeout=args.timeout,
        format=args.format,
        progress=args.progress,
        seed=args.seed,
        command_line="lossparity " + " ".join(shlex.quote(part) for part in sys.argv[1:]),
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        return command_sharded(sharded_args, usage_error=_usage_error)
    except KeyboardInterrupt:
        print("lossparity: interrupted; the sharded jobs' processes were stopped and no results were written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _usage_error(message: str):
    raise UsageError(message)


def _plan_registered_subjects(args, backends: list[str], selection: Selection) -> list:
    """Return the worker runs of the third-party subjects that --subject selects (default: all registered, for --backend all)."""
    from . import plugin, subjects

    requested = _split(args.subject)
    if not requested:
        requested = ["all"] if not args.backend or "all" in _split(args.backend) else ["none"]
    if "none" in requested:
        if len(requested) > 1:
            raise UsageError(f"--subject none cannot be combined with other subjects; got {', '.join(requested)}")
        return []
    names = subjects.registered()
    targets = names if "all" in requested else requested
    runs = []
    for target in targets:
        try:
            planned = subjects.plan(target, selected_losses=selection.losses)
        except plugin.PluginError as error:
            if "all" in requested and "declares no implementation of the selected" in str(error):
                continue  # A registered subject of none of the selected losses.
            raise UsageError(str(error)) from error
        runs += [run for run in planned if run.backend in backends or "all" in requested]
    labels = [run.label for run in runs]
    clashes = sorted({label for label in labels if labels.count(label) > 1 or label in backends})
    if clashes:
        raise UsageError(f"subject names {', '.join(clashes)} are used twice (or equal a backend's name); give the declarations distinct subject names")
    return runs


def _run_and_report(
    args, selection: Selection, backends: list[str], subject_runs: list, *, allow_tf32=False, determinism=False, compare_device=None, grouped_failures=False
) -> int:
    """Run the backends' workers and the subjects' workers, then write, print and judge the results like lossparity run."""
    from dataclasses import replace

    from .runner import JournalError, _worker_command, run_backends

    by_label = {run.label: run for run in subject_runs}

    def command_for(run):
        subject = by_label.get(run.backend)
        if subject is None:
            return _worker_command(run, selection, args.device)
        command = _worker_command(run, replace(selection, losses=subject.losses), args.device)
        command[command.index("--backend") + 1] = subject.backend
        return command + ["--subject", subject.target, "--label", subject.label]

    labels = list(backends) + [run.label for run in subject_runs]
    command = "lossparity " + " ".join(shlex.quote(part) for part in sys.argv[1:])
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    environment = describe(args.device, tf32=allow_tf32)
    publish = getattr(args, "publish", False)
    out_dir = Path(args.out) if args.out else PROJECT_ROOT / "results" / environment["environment_id"]
    journal = out_dir / JOURNAL_FOLDER if (args.out or publish) else None
    resume = getattr(args, "resume", False)
    manifest = {"selection": asdict(selection), "device": args.device, "backends": labels, "subjects": [run.target for run in subject_runs]}
    _prepare_journal(journal, manifest, resume)
    memory_limit = getattr(args, "memory_limit", None)
    # SIGTERM and SIGHUP (a closed terminal) take the same path as Ctrl-C, so the runner stops its workers on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        with _Progress(labels, show_progress) as progress:
            result = run_backends(
                labels,
                selection,
                device=args.device,
                timeout=args.timeout,
                jobs=args.jobs,
                on_progress=progress.update,
                worker_command=command_for,
                worker_env={run.label: run.environment for run in subject_runs},
                frameworks={run.label: run.backend for run in subject_runs},
                memory_limit=None if memory_limit is None else int(memory_limit * 2**30),
                journal=journal,
                resume=resume,
            )
    except JournalError as error:
        raise UsageError(f"--resume cannot read the interrupted run's journal: {error}; delete {journal} and run without --resume") from error
    except KeyboardInterrupt:
        if journal is not None and hasattr(args, "resume"):
            print(
                f"lossparity: interrupted; the workers were stopped, the published results were left as they were, and the "
                f"finished units are kept in {journal}. Run the same command with --resume to continue.",
                file=sys.stderr,
            )
        else:
            print("lossparity: interrupted; the workers were stopped and no results were written", file=sys.stderr)
        return EXIT_INTERRUPTED

    document = {
        "schema": 1,
        "environment": environment,
        "run": {
            "command": command,
            "seed": selection.seed,
            "losses": list(selection.losses),
            "dtypes": list(selection.dtypes),
            "modes": list(selection.modes),
            "compiled_losses": None if selection.compiled_losses is None else list(selection.compiled_losses),
            "tf32": allow_tf32,
            "determinism": determinism,
            "compare_device": compare_device,
            "wall_seconds": round(result.wall_seconds, 2),
            "compile_seconds": round(sum(run.compile_seconds for run in result.backends.values()), 2),
            "backends": {
                name: {
                    "versions": run.versions,
                    "unavailable": run.unavailable,
                    "precision": run.environment.get("precision"),
                    "device_name": run.environment.get("device_name"),
                    "seconds": round(run.seconds, 2),
                    "compile_seconds": round(run.compile_seconds, 2),
                    "restarts": run.restarts,
                }
                for name, run in result.backends.items()
            },
            "subjects": {
                run.label: {"target": run.target, "backend": run.backend, "losses": list(run.losses), "environment": run.environment, "description": run.description}
                for run in subject_runs
            },
        },
        "records": result.records,
    }

    if journal is not None:
        shutil.rmtree(journal, ignore_errors=True)  # The run finished, so there is nothing to resume.
    index_failed = False
    if publish and not result.records:
        print("lossparity: nothing to publish, because no backend produced a result", file=sys.stderr)
    elif args.out or getattr(args, "publish", False):
        json_path, markdown_path = report.write_results(document, out_dir)
        if getattr(args, "publish", False):
            from .reliability import write_reliability
            from .schema import ResultsFileError

            write_reliability(out_dir)
            try:
                report.write_index(out_dir.parent)
            except ResultsFileError as error:
                # This run's own tables are written; only the index of all runs is stale.
                print(f"lossparity: error: {error}; results/README.md was not regenerated", file=sys.stderr)
                index_failed = True
            link = markdown_path.relative_to(PROJECT_ROOT).as_posix() if markdown_path.is_relative_to(PROJECT_ROOT) else str(markdown_path)
            if not report.update_readme_summary(PROJECT_ROOT / "README.md", document, link):
                print(
                    f"lossparity: the README summary shows the CPU correctness tier only, so it was left as it is; "
                    f"this run's tables are in {out_dir} and listed in results/README.md",
                    file=sys.stderr,
                )

    if args.format == "json":
        try:
            json.dump(document, sys.stdout, indent=1)
            sys.stdout.write("\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (as "| head" does); that is not an error of the run.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    elif grouped_failures:
        _print_check_report(document, out_dir if args.out else None)
    else:
        _print_summary(document, result, out_dir if (args.out or getattr(args, "publish", False)) else None)

    checked = [record for record in result.records if record["status"] not in ("unsupported", "skip")]
    if grouped_failures and result.records and not checked:
        print(
            "lossparity: no case was checked: every case sets an argument the declaration does not cover (see 'not covered' "
            "above); check the declaration's arguments, supports and unsupported",
            file=sys.stderr,
        )
        return EXIT_FAILURES

    unexpected = [record for record in result.records if record["status"] in report.UNEXPECTED]
    if not result.records:
        print("lossparity: no backend produced a result; see the reasons above", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_FAILURES if unexpected or index_failed else EXIT_OK


def command_check(args) -> int:
    """Run every case of the declared loss on a user's implementation, like lossparity run does for the mirrors."""
    from . import plugin, subjects

    backend = args.backend
    if backend is not None and backend not in plugin.FRAMEWORKS:
        raise UsageError(f"--backend {backend!r} is invalid; expected one of: {', '.join(plugin.FRAMEWORKS)} (the framework whose tensors IMPL takes)")
    requested_losses = _split(args.loss)
    unknown = [name for name in requested_losses if name not in losses.SPECS]
    if unknown:
        raise UsageError(f"unknown loss {', '.join(map(repr, unknown))}; expected one of: {', '.join(losses.SPECS)}")
    only_loss = requested_losses[0] if len(requested_losses) == 1 else None
    # The user's module is imported from the current folder, as python -m would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        runs = subjects.plan(args.implementation, loss=only_loss, backend=backend, selected_losses=tuple(requested_losses) or None)
        declared = plugin.load(args.implementation, loss=only_loss, backend=backend)
    except plugin.PluginError as error:
        raise UsageError(str(error)) from error
    declared_losses = tuple(dict.fromkeys(item.loss for item in declared))
    missing = [name for name in requested_losses if name not in declared_losses]
    if missing:
        raise UsageError(f"--loss {', '.join(missing)}: {args.implementation} declares only {', '.join(declared_losses)}")
    for run in runs:
        hint = backend_loader.missing_framework(run.backend)
        if hint:
            raise UsageError(f"{args.implementation} takes {run.backend} tensors, but {hint}")
    selection = Selection(
        losses=tuple(dict.fromkeys(loss for run in runs for loss in run.losses)),
        dtypes=_choose("dtype", _split(args.dtype), DTYPES, DTYPES),
        modes=_choose("mode", _split(args.mode), MODES, MODES),
        groups=_choose("case group", _split(args.group), tuple(group for group in GROUPS if group != "gpu"), ()) or None,
        seed=args.seed,
    )
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} is invalid; expected a non-negative integer")
    if args.out:
        _require_writable_folder(Path(args.out))
    if not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout {args.timeout} is invalid; expected a positive, finite number of seconds")
    if selection.groups == ("bad-input",) and not any(item.validates for item in declared):
        raise UsageError(
            f"--group bad-input runs only for implementations that promise the spec's errors (validates=True in the "
            f"declaration), and {args.implementation} does not; choose other groups"
        )
    args.jobs = 1
    args.device = "cpu"
    args.publish = False
    # The worker imports the target by name, so it needs the current folder on its path too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return _run_and_report(args, selection, [], runs, grouped_failures=True)


# The folder, inside the results folder, where an unfinished run keeps its workers' output for --resume.
JOURNAL_FOLDER = ".partial"


def _prepare_journal(journal: Path | None, manifest: dict, resume: bool) -> None:
    """Check --resume against the journal's manifest, or start a new journal, replacing an old one."""
    if journal is None:
        if resume:
            raise UsageError("--resume continues a run that wrote results, so it needs --out DIR or --publish as the interrupted run had")
        return
    manifest_path = journal / "manifest.json"
    if resume:
        if not manifest_path.exists():
            raise UsageError(f"--resume found no interrupted run in {journal}; run the command without --resume")
        try:
            recorded = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--resume cannot read {manifest_path}: {error}; delete {journal} and run without --resume") from error
        recorded_json, current_json = json.dumps(recorded, sort_keys=True), json.dumps(manifest, sort_keys=True, default=list)
        if recorded_json != current_json:
            differing = sorted(key for key in set(recorded) | set(manifest) if json.dumps(recorded.get(key), sort_keys=True) != json.dumps(manifest.get(key), sort_keys=True, default=list))
            raise UsageError(
                f"--resume: this command selects a different run than the interrupted one in {journal} (differs in: {', '.join(differing)}); "
                f"repeat the interrupted command with --resume, or drop --resume to start over"
            )
        return
    shutil.rmtree(journal, ignore_errors=True)
    journal.mkdir(parents=True)
    report.write_atomically(manifest_path, json.dumps(manifest, sort_keys=True, default=list))


def _print_check_report(document, out_dir) -> None:
    """Print lossparity check's report: counts per implementation, then each failing case and check on one line."""
    from collections import defaultdict

    records = document["records"]
    for name, info in document["run"]["backends"].items():
        if info.get("unavailable"):
            print(f"{name}: not run: {info['unavailable']}")
    by_implementation = defaultdict(list)
    for record in records:
        by_implementation[(record["loss"], record["implementation"])].append(record)
    for (loss, implementation), items in by_implementation.items():
        tally = report.counts(items)
        print(f"{implementation} against the spec {loss}: " + ", ".join(f"{status} {tally[status]}" for status in report.STATUS_ORDER if tally[status]))
        failing = defaultdict(list)
        for record in items:
            if record["status"] in report.UNEXPECTED:
                failing[(record["case"], record["check"], record["status"])].append(record)
        if failing:
            print("  failed (case, check: the dtypes and modes where it failed; the first failure's detail):")
        for (case, check, status), group in failing.items():
            where = ", ".join(f"{record['dtype']} {record['mode']}" for record in group)
            print(f"  {status.upper()} {case}, {check}: {where}")
            print(f"      {report.short_detail(group[0]['detail'], 240)}")
        uncovered = defaultdict(set)
        for record in items:
            if record["status"] == "unsupported":
                uncovered[record["detail"]].add(record["case"])
        for reason, cases in uncovered.items():
            print(f"  not covered: {reason} ({', '.join(sorted(cases))})")
    print(f"wall time {document['run']['wall_seconds']:.1f} s, compiling {document['run']['compile_seconds']:.1f} s" + (f"; results in {out_dir}" if out_dir else ""))


def _print_summary(document, result, out_dir) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    records = document["records"]
    spec_records = [record for record in records if not report.is_device_check(record)]
    with_device = len(spec_records) < len(records)
    statuses = [status for status in report.STATUS_ORDER if any(record["status"] == status for record in spec_records)]
    table = Table(title="lossparity conformance summary (checks against the spec)")
    table.add_column("backend")
    for status in statuses:
        table.add_column(status, justify="right")
    if with_device:
        table.add_column("determinism and device checks")
    table.add_column("seconds", justify="right")
    for name, run in result.backends.items():
        if run.unavailable:
            table.add_row(name, *[""] * (len(statuses) + with_device), escape(f"not run: {run.unavailable}"))
            continue
        tally = report.counts(record for record in run.records if not report.is_device_check(record))
        device_cells = [report.device_check_summary(run.records)] if with_device else []
        table.add_row(name, *[str(tally[status]) for status in statuses], *device_cells, f"{run.seconds:.0f}")
    console.print(table)
    unexpected = [record for record in records if record["status"] in report.UNEXPECTED]
    for record in unexpected[:20]:
        console.print(
            f"[red]{record['status'].upper()}[/red] {record['backend']}/{record['loss']}/{record['implementation']}/"
            f"{record['dtype']}/{record['mode']}/{record['case']}/{record['check']}: {report.short_detail(record['detail'])}",
            markup=True,
            highlight=False,
        )
    if len(unexpected) > 20:
        console.print(f"... and {len(unexpected) - 20} more unexpected results (see --format json or conformance.json)")
    xpasses = [record for record in records if record["status"] == "xpass"]
    if xpasses:
        console.print(f"{len(xpasses)} known failures now pass (XPASS): remove their entries from known_failures.toml")
    console.print(
        f"wall time {document['run']['wall_seconds']:.1f} s, compiling {document['run']['compile_seconds']:.1f} s"
        + (f"; results in {out_dir}" if out_dir else "")
    )


def command_oracle(args) -> int:
    """Check the float64 spec against the 50-digit mpmath oracle; print the worst error per loss and write oracle.json."""
    import math
    import time

    from .oracle.__main__ import format_table
    from .oracle.run import BOUND_REASONS, KNOWN_FINDINGS, run_oracle, worst_by_loss

    selected = list(_choose("loss", _split(args.loss), tuple(losses.SPECS), tuple(losses.SPECS)))
    if args.max_elements < 1:
        raise UsageError(f"--max-elements {args.max_elements} is invalid; expected a positive number of input elements")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} is invalid; expected a non-negative integer")
    if args.publish and (args.loss or args.max_elements != ORACLE_MAX_ELEMENTS or args.seed):
        raise UsageError("--publish replaces this machine's oracle table, so it needs the full run: drop --loss, --max-elements and --seed")
    if args.out:
        _require_writable_folder(Path(args.out))
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = (lambda message: print(message, file=sys.stderr, flush=True)) if show_progress else None

    started = time.perf_counter()
    records = run_oracle(selected, seed=args.seed, max_elements=args.max_elements, progress=progress)
    summary = worst_by_loss(records)
    seconds = time.perf_counter() - started
    print(format_table(summary))
    failures = [record for record in records if record["status"] == "fail"]
    known = [record for record in failures if (record["loss"], record["case"], record["check"]) in KNOWN_FINDINGS]
    unknown = [record for record in failures if record not in known]
    for record in failures:
        label = "KNOWN" if record in known else "FAIL"
        print(f"{label} {record['loss']} / {record['case']} / {record['check']}: {record['ulp']:.3g} ulp > {record['bound']:g}: {record['detail']}")
    print(f"{len(records)} checks of {len(summary)} losses in {seconds:.1f} s; {len(unknown)} over their bound, {len(known)} known findings")

    def finite(value):
        return None if value is None or not math.isfinite(value) else value

    document = {
        "schema": 1,
        "command": "lossparity " + " ".join(shlex.quote(part) for part in sys.argv[1:]),
        "seconds": round(seconds, 2),
        "seed": args.seed,
        "max_elements": args.max_elements,
        "losses": {
            loss: {
                "worst_ulp": finite(entry["ulp"]),
                "worst_is_finite": math.isfinite(entry["ulp"]),
                "finite_ulp": finite(entry["finite_ulp"]),
                "bound": entry["bound"],
                "bound_reason": BOUND_REASONS[loss],
                "case": entry["case"],
                "check": entry["check"],
                "cases": entry["cases"],
                "checks": entry["checks"],
                "failures": entry["failures"],
                "known_findings": [
                    {"case": record["case"], "check": record["check"], "finding": KNOWN_FINDINGS[(record["loss"], record["case"], record["check"])]}
                    for record in known
                    if record["loss"] == loss
                ],
            }
            for loss, entry in summary.items()
        },
        "records": [{**record, "ulp": finite(record["ulp"]), "detail": json.loads(json.dumps(record["detail"], default=str))} for record in records],
    }
    folders = [Path(args.out)] if args.out else []
    if args.publish:
        folders.append(PROJECT_ROOT / "results" / describe("cpu")["environment_id"])
    for folder in folders:
        report.write_atomically(folder / "oracle.json", json.dumps(document, indent=1, sort_keys=True) + "\n")
        if args.publish:
            from .reliability import write_reliability

            write_reliability(folder)
    return EXIT_FAILURES if unknown else EXIT_OK


def command_fuzz(args) -> int:
    from .fuzz.command import command_fuzz as run_fuzz

    return run_fuzz(args, usage_error=_usage_error)


def command_bench(args) -> int:
    from .bench.command import command_bench as run_bench

    # SIGTERM and SIGHUP (a closed terminal) take the same path as Ctrl-C, so the runner stops the worker on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    return run_bench(
        args,
        usage_error=UsageError,
        split=_split,
        choose=_choose,
        require_writable_folder=_require_writable_folder,
        progress_class=_Progress,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossparity",
        description="Check PyTorch, TensorFlow and JAX implementations of LLM losses against a float64 NumPy spec.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log worker starts, restarts and faults")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="list the losses, their implementations per backend and the installed frameworks")

    explain = commands.add_parser("explain", help="show a loss's formula, conventions and how each built-in differs")
    explain.add_argument("loss")

    run = commands.add_parser("run", help="run the conformance cases")
    run.add_argument("--backend", action="append", help="numpy, torch, tensorflow, jax or all (default all); repeatable or comma-separated")
    run.add_argument("--loss", action="append", help="loss name(s) to run (default all)")
    run.add_argument("--dtype", action="append", help="float64, float32, bfloat16, float16 or all (default all)")
    run.add_argument("--mode", action="append", help="eager, compiled or all (default all)")
    run.add_argument("--group", action="append", help="case groups: small, edge, realistic, regression (saved fuzz counterexamples), bad-input, gpu (only with --device gpu) or all (default all)")
    run.add_argument("--compiled-loss", action="append", help="run compiled mode only for these entries, each LOSS or LOSS:DTYPE (default: every selected loss); repeatable or comma-separated")
    run.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device to run the frameworks on (default cpu)")
    run.add_argument(
        "--world-size",
        help="run the vocabulary-parallel checks of cross_entropy and linear_cross_entropy instead, at these world sizes "
        "(for example 4, or 1,2,4,8): PyTorch over gloo in that many processes, JAX over that many host devices",
    )
    run.add_argument(
        "--allow-tf32",
        action="store_true",
        help="the TF32 tier (needs --device gpu): allow TensorFloat-32 in float32 matmuls and convolutions, judge float32 "
        "results of the losses that contain a matmul with the TF32 tolerances and label the results with the -tf32 "
        "environment id (default: TF32 off)",
    )
    run.add_argument(
        "--determinism",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate each unit twice on the device and compare the results bit for bit (default: on with --device gpu)",
    )
    run.add_argument(
        "--cpu-comparison",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --device gpu, also evaluate each unit on the CPU in the same worker and compare (default: on with --device gpu)",
    )
    # For the harness's own tests: compare with this device's runtime, on any --device (cpu against cpu gives zero difference).
    run.add_argument("--compare-device", help=argparse.SUPPRESS)
    # For the harness's own tests: the TF32 tier's labels and tolerances on a CPU, where TF32 changes nothing.
    run.add_argument("--tf32-tier-on-cpu", action="store_true", help=argparse.SUPPRESS)
    run.add_argument(
        "--subject",
        action="append",
        help="third-party implementations to run beside the backends: entry-point names of the lossparity.implementations "
        "group, IMPL targets, all or none (default: all registered ones with --backend all, else none)",
    )
    run.add_argument("--out", help="folder for conformance.json and conformance.md (default: write nothing unless --publish)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run with --out or --publish from its last finished unit; the command must select the same run",
    )
    run.add_argument(
        "--memory-limit",
        type=float,
        help="cap each worker's virtual address space at this many GiB (RLIMIT_AS), so an allocation beyond it fails in "
        "that worker only; frameworks reserve address space at start-up, so allow several GiB (default: no limit)",
    )
    run.add_argument("--publish", action="store_true", help="write results/<environment-id>/, the results index and the README summary")
    run.add_argument("--format", choices=("table", "json"), default="table", help="summary table, or one JSON document on stdout")
    run.add_argument("--seed", type=int, default=0, help="seed of the generated cases (default 0)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds a backend may go without progress before it is killed (default 600)")
    run.add_argument("--jobs", type=int, default=2, help="backends run at the same time (default 2)")
    progress = run.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress bars (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")

    check = commands.add_parser(
        "check",
        help="check your own implementation of a spec loss against the spec, with every case of that loss",
        description="Run every conformance case of a spec loss on IMPL, a function of yours, and report it like "
        "lossparity run reports the mirrors. IMPL is package.module:function (importable from the current folder "
        "or installed) or the name of an entry point in the lossparity.implementations group. Declare the loss, the "
        "backend and the argument mapping with conformance.plugin.implements, or give --loss and --backend for a "
        "function that takes the spec's argument names. Exit status: 0 when every case passed or was not covered, "
        "1 when one failed, raised, crashed or hung, 2 on a usage error, 130 when interrupted.",
    )
    check.add_argument("implementation", metavar="IMPL", help="package.module:function, or an entry-point name")
    check.add_argument("--loss", action="append", help="the spec loss IMPL computes (needed when IMPL has no declaration; default: every loss it declares)")
    check.add_argument("--backend", help="the framework whose tensors IMPL takes: torch, tensorflow or jax (needed when IMPL has no declaration)")
    check.add_argument("--dtype", action="append", help="float64, float32, bfloat16, float16 or all (default all)")
    check.add_argument("--mode", action="append", help="eager, compiled or all (default all)")
    check.add_argument("--group", action="append", help="case groups: small, edge, realistic, regression, bad-input or all (default all)")
    check.add_argument("--out", help="folder for conformance.json and conformance.md (default: write nothing)")
    check.add_argument("--format", choices=("table", "json"), default="table", help="summary table, or one JSON document on stdout")
    check.add_argument("--seed", type=int, default=0, help="seed of the generated cases (default 0)")
    check.add_argument("--timeout", type=float, default=600.0, help="seconds the implementation may go without progress before it is killed (default 600)")
    check_progress = check.add_mutually_exclusive_group()
    check_progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar (default: when stderr is a terminal)")
    check_progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")

    oracle = commands.add_parser(
        "oracle",
        help="check the float64 spec itself against mpmath at 50 significant digits, in units in the last place",
        description="Evaluate every loss's value and gradients with mpmath at 50 significant digits on the small and "
        "edge cases, and measure the float64 spec's error in units in the last place (ulp) against a stated bound per "
        "loss. Exit status: 0 when every check is within its bound or is a known finding, 1 otherwise, 2 on a usage error.",
    )
    oracle.add_argument("--loss", action="append", help="loss name(s) to check (default all)")
    oracle.add_argument("--max-elements", type=int, default=ORACLE_MAX_ELEMENTS, help=f"skip cases with more input elements than this (default {ORACLE_MAX_ELEMENTS})")
    oracle.add_argument("--seed", type=int, default=0, help="seed of the cases (default 0)")
    oracle.add_argument("--out", help="folder for oracle.json (default: write nothing unless --publish)")
    oracle.add_argument("--publish", action="store_true", help="write results/<environment-id>/oracle.json and the reliability table")
    oracle_progress = oracle.add_mutually_exclusive_group()
    oracle_progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="print one line per loss on stderr (default: when stderr is a terminal)")
    oracle_progress.add_argument("--no-progress", dest="progress", action="store_false", help="print no progress lines")

    from .fuzz.command import DESCRIPTION as FUZZ_DESCRIPTION, add_arguments as add_fuzz_arguments

    fuzz = commands.add_parser(
        "fuzz",
        help="drive Hypothesis examples through one backend's implementations; save shrunk counterexamples as regression cases",
        description=FUZZ_DESCRIPTION + " Exit status: 0 when no new counterexample was found, 1 when one was found and saved, 2 on a usage error.",
    )
    add_fuzz_arguments(fuzz)

    bench = commands.add_parser(
        "bench",
        help="time every implementation, forward and forward plus backward, and write perf.json, perf.md and plots",
        description="Time every implementation of the preset's losses (mirrors and built-ins), forward and forward "
        "plus backward, eager and compiled, one backend process at a time, with peak memory and the machine's copy "
        "bandwidth. A full run of the device's preset without --out replaces results/<environment-id>/perf.* and "
        "the README's benchmark link; any other run writes only to --out. Exit status: 0, 1 when an implementation "
        "raised, crashed or hung, 2 on a usage error, 130 when interrupted.",
    )
    bench.add_argument("--backend", action="append", help="torch, jax, tensorflow or all (default all); repeatable or comma-separated")
    bench.add_argument("--loss", action="append", help="loss name(s) of the preset to time (default all of them)")
    bench.add_argument("--preset", help="cpu, gpu, gpu-check (the bounded subset that conformance/gpu_check.sh times) or smoke: the shapes, dtypes and repeats (default: the --device name)")
    bench.add_argument("--mode", action="append", help="eager, compiled or all (default all)")
    bench.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device to run the frameworks on (default cpu)")
    bench.add_argument(
        "--out",
        help="folder for perf.json, perf.md and the plots (default: results/<environment-id>/ for a full run "
        "of the device's preset, else nothing is written)",
    )
    bench.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    bench.add_argument("--timeout", type=float, default=900.0, help="seconds a backend may go without progress before it is killed (default 900)")
    bench_progress = bench.add_mutually_exclusive_group()
    bench_progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress bars (default: when stderr is a terminal)")
    bench_progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    return parser


# The status a shell reports for a process killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up messages would bury the output of list and explain.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"list": command_list, "explain": command_explain, "run": command_run, "check": command_check, "bench": command_bench, "oracle": command_oracle, "fuzz": command_fuzz}
    try:
        return handlers[args.command](args)
    except UsageError as error:
        print(f"lossparity: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of stdout went away (``lossparity explain X | head``). Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
