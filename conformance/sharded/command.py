"""The sharded run: plan the units, run one job per backend and world size, check the outputs, report.

``command_sharded(args, *, usage_error)`` is the entry point; see the package
docstring for the fields of args.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import environment
from . import checks, launch, report
from .cases import BACKENDS, DEFAULT_DTYPES, DTYPES, LOSSES, MAX_JAX_CPU_DEVICES, cases_for, implementations_for, prepare

DEFAULT_WORLD_SIZES = (1, 2, 4, 8)
DEFAULT_TIMEOUT = 600.0
# A collective that waits longer than this fails, so a rank that raised before a
# collective cannot keep its peers waiting for the whole job timeout.
MAX_COLLECTIVE_TIMEOUT = 60.0


@dataclass
class Selection:
    losses: tuple[str, ...]
    backends: tuple[str, ...]
    dtypes: tuple[str, ...]
    world_sizes: tuple[int, ...]
    out: Path | None
    publish: bool
    timeout: float
    format: str
    progress: bool
    seed: int


def _names(value, allowed: tuple[str, ...], default: tuple[str, ...], argument: str, usage_error) -> tuple[str, ...]:
    """Return the selected names in the order of allowed; None or "all" selects default."""
    if value is None:
        return default
    values = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in values for part in str(item).split(",") if part.strip()]
    if not names:
        usage_error(f"{argument} is empty; expected one or more of {', '.join(allowed)}")
    if "all" in names:
        return default
    unknown = [name for name in names if name not in allowed]
    if unknown:
        usage_error(f"{argument} {', '.join(repr(name) for name in unknown)} not found; expected one or more of {', '.join(allowed)} or all")
    return tuple(name for name in allowed if name in names)


def _world_sizes(value, backends, usage_error) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_WORLD_SIZES
    values = [value] if isinstance(value, (int, str)) else list(value)
    sizes = []
    for item in values:
        for part in str(item).split(","):
            part = part.strip()
            try:
                size = int(part)
            except ValueError:
                usage_error(f"--world-size {part!r} is not an integer; expected positive integers such as 1,2,4,8")
            if size < 1:
                usage_error(f"--world-size {size} is invalid; expected an integer >= 1")
            sizes.append(size)
    if not sizes:
        usage_error("--world-size is empty; expected positive integers such as 1,2,4,8")
    if "jax" in backends and max(sizes) > MAX_JAX_CPU_DEVICES:
        usage_error(
            f"--world-size {max(sizes)} is larger than the {MAX_JAX_CPU_DEVICES} CPU devices the JAX job creates; "
            f"expected at most {MAX_JAX_CPU_DEVICES} with --backend jax, or select --backend torch"
        )
    return tuple(sorted(set(sizes)))


def parse_selection(args, usage_error) -> Selection:
    """Validate the fields of args and return the Selection; usage_error(message) is called for bad arguments."""

    losses = _names(getattr(args, "loss", None), LOSSES, LOSSES, "--loss", usage_error)
    backends = _names(getattr(args, "backend", None), BACKENDS, BACKENDS, "--backend", usage_error)
    dtypes = _names(getattr(args, "dtype", None), DTYPES, DEFAULT_DTYPES, "--dtype", usage_error)
    world_sizes = _world_sizes(getattr(args, "world_size", None), backends, usage_error)

    timeout = getattr(args, "timeout", None)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        usage_error(f"--timeout {timeout!r} is invalid; expected a positive number of seconds per world-size job")
    output_format = getattr(args, "format", None) or "table"
    if output_format not in ("table", "json"):
        usage_error(f"--format {output_format!r} is invalid; expected table or json")
    seed = getattr(args, "seed", None)
    seed = 0 if seed is None else seed
    if not isinstance(seed, int) or seed < 0:
        usage_error(f"--seed {seed!r} is invalid; expected an integer >= 0")

    out = getattr(args, "out", None)
    progress = getattr(args, "progress", None)
    return Selection(
        losses=losses,
        backends=backends,
        dtypes=dtypes,
        world_sizes=world_sizes,
        out=None if out is None else Path(out),
        publish=bool(getattr(args, "publish", False)),
        timeout=float(timeout),
        format=output_format,
        progress=True if progress is None else bool(progress),
        seed=seed,
    )


def _plan(backend: str, world_size: int, selection: Selection):
    """Return (units to run, records of units the implementation cannot express) of one job."""
    units, skipped = [], []
    for impl in implementations_for(backend, selection.losses):
        for case in cases_for(impl.loss):
            for dtype in selection.dtypes:
                prepared = prepare(case, dtype, selection.seed)
                reason = impl.unsupported(case, prepared, world_size)
                if reason:
                    skipped.append(checks.make_record(impl, case, dtype, world_size, "value", "unsupported", detail=reason))
                    continue
                unit_id = f"{impl.loss}/{impl.name}/{dtype}/{case.name}"
                units.append(
                    {"id": unit_id, "implementation": impl.name, "case": case.name, "dtype": dtype, "impl": impl, "case_object": case, "prepared": prepared}
                )
    return units, skipped


def _commands(backend: str, world_size: int, job_dir: Path, selection: Selection) -> list[list[str]]:
    python = sys.executable
    if backend == "jax":
        return [[python, "-m", "conformance.sharded.jax_worker", "--job", str(job_dir), "--world-size", str(world_size), "--seed", str(selection.seed)]]
    port = launch.free_port()
    collective_timeout = min(MAX_COLLECTIVE_TIMEOUT, selection.timeout)
    return [
        [
            python,
            "-m",
            "conformance.sharded.torch_worker",
            "--job",
            str(job_dir),
            "--rank",
            str(rank),
            "--world-size",
            str(world_size),
            "--port",
            str(port),
            "--collective-timeout",
            str(collective_timeout),
            "--seed",
            str(selection.seed),
        ]
        for rank in range(world_size)
    ]


def _worker_env(backend: str, world_size: int) -> dict:
    env = dict(os.environ)
    root = str(environment.PROJECT_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if backend == "jax":
        flags = " ".join(flag for flag in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in flag)
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={world_size}".strip()
        env.setdefault("JAX_PLATFORMS", "cpu")
    else:
        env["GLOO_SOCKET_IFNAME"] = "lo"
        # Each rank gets an equal share of the cores instead of one thread per core each.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    return env


def _read_lines(path: Path) -> dict[str, dict]:
    lines = {}
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            if text.strip():
                line = json.loads(text)
                lines[line["unit"]] = line
    return lines


def _launch(backend, world_size, units, selection, job_dir, timeout, on_start):
    """Start one set of worker processes on units and return (outcome, each rank's lines by unit id)."""
    job_dir.mkdir(parents=True)
    plan = [{key: unit[key] for key in ("id", "implementation", "case", "dtype")} for unit in units]
    (job_dir / "plan.json").write_text(json.dumps({"units": plan}))
    outcome = launch.run_processes(
        _commands(backend, world_size, job_dir, selection),
        env=_worker_env(backend, world_size),
        cwd=environment.PROJECT_ROOT,
        job_dir=job_dir,
        timeout=timeout,
        on_start=on_start,
    )
    ranks = 1 if backend == "jax" else world_size
    return outcome, [_read_lines(job_dir / f"rank-{rank}.jsonl") for rank in range(ranks)]


def run_job(backend: str, world_size: int, selection: Selection, scratch: Path, on_start=None):
    """Run one backend at one world size; return its records, the outputs per unit for the spread check, and a summary.

    A unit that raises is recorded as an error, and the ranks go on together
    when every rank left the unit. When a peer may still wait in one of the
    unit's collectives, the PyTorch rank that raised exits instead. The job
    then starts fresh processes for the units after it. selection.timeout
    bounds the whole job, restarts included.
    """
    pending, records = _plan(backend, world_size, selection)
    outputs = {}
    started = time.monotonic()
    launches, outcome_label = 0, "ok"
    while pending:
        remaining = selection.timeout - (time.monotonic() - started)
        if remaining <= 0:
            for unit in pending:
                detail = f"the {backend} job at world size {world_size} ran past --timeout {selection.timeout:g} s before this unit started"
                records.append(checks.make_record(unit["impl"], unit["case_object"], unit["dtype"], world_size, "value", "timeout", detail=detail))
            outcome_label = "timeout"
            break
        outcome, per_rank = _launch(backend, world_size, pending, selection, scratch / f"{backend}-w{world_size}-{launches}", remaining, on_start)
        launches += 1
        finished = 0
        for unit in pending:
            lines = [results.get(unit["id"]) for results in per_rank]
            impl, case = unit["impl"], unit["case_object"]
            errors = [line for line in lines if line is not None and line.get("status") == "error"]
            if errors:
                # The first rank to raise shows the cause; its peers may then report lost connections.
                first = min(errors, key=lambda line: line.get("time", 0.0))
                records.append(checks.make_record(impl, case, unit["dtype"], world_size, "value", "error", detail=first["detail"]))
                finished += 1
                if all(line is not None for line in lines):
                    continue  # Every rank left the unit, so the ranks went on together.
                outcome_label = "restarted after an error"
            elif all(line is not None for line in lines):
                unit_records, unit_outputs = checks.evaluate_unit(impl, case, unit["dtype"], world_size, unit["prepared"], lines)
                records += unit_records
                if unit_outputs is not None:
                    outputs[(impl.backend, impl.loss, impl.name, case.name, unit["dtype"])] = unit_outputs
                finished += 1
                continue
            elif outcome.timed_out:
                detail = f"the {backend} job at world size {world_size} ran past --timeout {selection.timeout:g} s before this unit finished"
                records.append(checks.make_record(impl, case, unit["dtype"], world_size, "value", "timeout", detail=detail))
                finished += 1
                outcome_label = "timeout"
            else:
                codes = ", ".join(str(code) for code in outcome.returncodes)
                detail = f"a {backend} worker exited (exit codes {codes}) before this unit finished: {outcome.log_tail(600)}"
                records.append(checks.make_record(impl, case, unit["dtype"], world_size, "value", "crash", detail=detail))
                finished += 1
                outcome_label = "crash"
                if not any(per_rank):
                    # The processes died before finishing any unit, so a restart would too.
                    for later in pending[finished:]:
                        records.append(checks.make_record(later["impl"], later["case_object"], later["dtype"], world_size, "value", "crash", detail=detail))
                    finished = len(pending)
            break
        if outcome_label == "timeout":
            for unit in pending[finished:]:
                detail = f"the {backend} job at world size {world_size} ran past --timeout {selection.timeout:g} s before this unit started"
                records.append(checks.make_record(unit["impl"], unit["case_object"], unit["dtype"], world_size, "value", "timeout", detail=detail))
            break
        pending = pending[finished:]
    summary = {
        "backend": backend,
        "world_size": world_size,
        "seconds": round(time.monotonic() - started, 2),
        "units": sum(1 for record in records if record["check"] == "value"),
        "launches": launches,
        "outcome": outcome_label,
    }
    return records, outputs, summary


def _progress_line(summary: dict, records: list[dict]) -> str:
    tally = {}
    for record in records:
        tally[record["status"]] = tally.get(record["status"], 0) + 1
    counts = ", ".join(f"{status} {count}" for status, count in sorted(tally.items()))
    return (
        f"sharded {summary['backend']} world size {summary['world_size']}: {summary['units']} units in {summary['seconds']:.1f} s, "
        f"{summary['launches']} launches ({summary['outcome']}); {counts}"
    )


def run(selection: Selection, on_start=None) -> dict:
    """Run every selected backend at every selected world size and return the results document."""
    started = time.monotonic()
    records, jobs = [], []
    outputs_by_unit: dict[tuple, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="lossparity-sharded-") as scratch, launch.terminate_as_interrupt():
        for backend in selection.backends:
            for world_size in selection.world_sizes:

                def started_job(process_group, backend=backend, world_size=world_size):
                    if selection.progress:
                        print(f"sharded {backend} world size {world_size}: started as process group {process_group}", file=sys.stderr, flush=True)
                    if on_start is not None:
                        on_start(process_group)

                job_records, outputs, summary = run_job(backend, world_size, selection, Path(scratch), started_job)
                records += job_records
                jobs.append(summary)
                for key, output in outputs.items():
                    outputs_by_unit.setdefault(key, {})[world_size] = output
                if selection.progress:
                    print(_progress_line(summary, job_records), file=sys.stderr, flush=True)

    for (backend, loss, name, case_name, dtype), by_world_size in outputs_by_unit.items():
        impl = next(impl for impl in implementations_for(backend, (loss,)) if impl.name == name)
        case = next(case for case in cases_for(loss) if case.name == case_name)
        records += checks.spread_records(impl, case, dtype, by_world_size)

    return {
        "kind": "lossparity-sharded",
        "environment": environment.describe("cpu"),
        "selection": {
            "losses": list(selection.losses),
            "backends": list(selection.backends),
            "dtypes": list(selection.dtypes),
            "world_sizes": list(selection.world_sizes),
            "seed": selection.seed,
            "timeout": selection.timeout,
        },
        "command": command_line(selection),
        "wall_seconds": round(time.monotonic() - started, 2),
        "jobs": jobs,
        "records": records,
    }


def command_line(selection: Selection) -> str:
    return (
        f"python -m conformance.sharded --loss {','.join(selection.losses)} --backend {','.join(selection.backends)} "
        f"--dtype {','.join(selection.dtypes)} --world-size {','.join(str(size) for size in selection.world_sizes)} --seed {selection.seed}"
    )


def command_sharded(args, *, usage_error) -> int:
    """Run the sharded checks selected by args; return 0 when nothing failed, crashed or timed out, else 1."""
    selection = parse_selection(args, usage_error)
    document = run(selection)
    command = getattr(args, "command_line", None)
    if command:
        document["command"] = command
    folders = []
    if selection.out is not None:
        folders.append(selection.out)
    if selection.publish:
        folders.append(environment.PROJECT_ROOT / "results" / document["environment"]["environment_id"])
    for folder in folders:
        json_path, markdown_path = report.write(document, folder)
        print(f"wrote {json_path} and {markdown_path}", file=sys.stderr)
    if selection.format == "json":
        print(json.dumps(document, indent=1, allow_nan=True))
    else:
        print(report.terminal_table(document))
    unexpected = [record for record in document["records"] if record["status"] in checks.UNEXPECTED]
    return 1 if unexpected else 0
