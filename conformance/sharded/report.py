"""Markdown, JSON and terminal output of a sharded run: sharded.md and sharded.json."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from ..report import short_detail, write_atomically
from .cases import CASES, IMPLEMENTATIONS, OPTAX_LINEAR_NAMED, OPTAX_NAMED
from .checks import UNEXPECTED

STATUS_ORDER = ("pass", "difference", "xfail", "xpass", "unsupported", "fail", "error", "crash", "timeout")
# Cases whose communication the tables show: the largest cross-entropy case, and a linear case the native supports.
COMMUNICATION_CASES = {"cross_entropy": "wide-v300", "linear_cross_entropy": "linear-sum-bias-v64"}

TENSORFLOW_STATEMENT = [
    "TensorFlow is not covered, because TensorFlow 2.21 has no maintained API for a vocabulary-parallel",
    "cross-entropy. `tf.nn.sparse_softmax_cross_entropy_with_logits` and the Keras losses take whole logits.",
    "The only TensorFlow API that shards a tensor's class axis over devices is DTensor",
    "(`tf.experimental.dtensor`), which is experimental, and whose API reference marks parts deprecated,",
    "such as `run_on` and `DTensorCheckpoint` (https://www.tensorflow.org/versions/r2.15/api_docs/python/tf/experimental/dtensor).",
    "Keras 3's distribution API (`keras.distribution`) is documented as implemented for the JAX backend only",
    "(https://keras.io/guides/distribution/), and its TensorFlow backend module",
    "`keras/src/backend/tensorflow/distribution_lib.py` (Keras 3.15.1) opens with \"DO NOT USE\" and calls itself a prototype.",
]


def _tally(records: list[dict]) -> Counter:
    return Counter(record["status"] for record in records)


def _status_cell(records: list[dict]) -> str:
    tally = _tally(records)
    return ", ".join(f"{status} {tally[status]}" for status in STATUS_ORDER if tally[status]) or "none"


def _worst(records: list[dict], prefix: str) -> str:
    values = [record["max_rel_error_eps"] for record in records if record["check"].startswith(prefix) and record["max_rel_error_eps"] is not None]
    return f"{max(values):.3g}" if values else ""


def _size_key(record: dict):
    size = record["world_size"]
    return size if isinstance(size, int) else 0


def _sorted_implementations(records: list[dict]) -> list[tuple[str, str]]:
    order = list(dict.fromkeys((impl.backend, impl.name) for impl in IMPLEMENTATIONS))
    found = {(record["backend"], record["implementation"]) for record in records}
    return [key for key in order if key in found]


def _comm_ratio(records: list[dict]) -> str:
    ratios = [record["comm_bytes"] / record["comm_minimum_bytes"] for record in records if record.get("comm_bytes") and record.get("comm_minimum_bytes")]
    zero = [record for record in records if record.get("comm_bytes") == 0]
    if ratios:
        return f"{max(ratios):.3g}"
    return "0" if zero else ""


def _summary(records: list[dict]) -> list[str]:
    statuses = [status for status in STATUS_ORDER if any(record["status"] == status for record in records)]
    lines = ["| backend | " + " | ".join(statuses) + " |", "|---|" + "---:|" * len(statuses)]
    by_backend = defaultdict(list)
    for record in records:
        by_backend[record["backend"]].append(record)
    for backend, items in by_backend.items():
        tally = _tally(items)
        lines.append(f"| {backend} | " + " | ".join(str(tally[status]) for status in statuses) + " |")
    return lines


def _checks_table(items: list[dict]) -> list[str]:
    """Rows of implementation x world size x dtype: statuses, worst errors and the worst communication ratio."""
    lines = [
        "| implementation | world size | dtype | checks | worst value error (eps) | worst gradient error (eps) | worst bytes / minimum |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    per_size = [record for record in items if isinstance(record["world_size"], int)]
    for backend, name in _sorted_implementations(per_size):
        mine = [record for record in per_size if (record["backend"], record["implementation"]) == (backend, name)]
        for size in sorted({record["world_size"] for record in mine}):
            for dtype in sorted({record["dtype"] for record in mine}, key=lambda d: ("float64", "float32", "bfloat16").index(d)):
                cell = [record for record in mine if record["world_size"] == size and record["dtype"] == dtype]
                lines.append(
                    f"| {backend}: {name} | {size} | {dtype} | {_status_cell(cell)} | {_worst(cell, 'value')} | {_worst(cell, 'grad:')} | {_comm_ratio(cell)} |"
                )
    return lines


def _communication_table(items: list[dict], loss: str) -> list[str]:
    case_name = COMMUNICATION_CASES[loss]
    case = next(case for case in CASES if case.name == case_name)
    chosen = [record for record in items if record["case"] == case_name and record["check"] == "value" and record.get("comm_bytes") is not None]
    if not chosen:
        return []
    shape = f"N = {case.rows}, V = {case.vocab}" + (f", H = {case.hidden}" if case.hidden else "")
    lines = [
        f"Communication per forward and backward step on one rank, case `{case_name}` ({shape}), measured from the collectives",
        "each implementation ran (PyTorch: a dispatcher mode that records every c10d collective; JAX: the collectives",
        "of the compiled step's HLO). A collective counts with its larger buffer on one rank, and one over a single rank counts",
        "0 bytes because it moves no data. The minimum is 3 N numbers in the compute dtype (float32 for bfloat16 inputs), 4 N with",
        "label smoothing, plus the N x H hidden-state gradient for linear cross-entropy. The gather is N x V logits in the input dtype.",
        "",
        "| implementation | world size | dtype | collectives (calls) | bytes per step | minimum | gather of the logits |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for backend, name in _sorted_implementations(chosen):
        for record in sorted((r for r in chosen if (r["backend"], r["implementation"]) == (backend, name)), key=lambda r: (r["world_size"], r["dtype"])):
            calls = ", ".join(f"{kind} {entry['calls']}" for kind, entry in sorted(record["collectives"].items())) or "none"
            lines.append(
                f"| {backend}: {name} | {record['world_size']} | {record['dtype']} | {calls} | {record['comm_bytes']} | "
                f"{record['comm_minimum_bytes']} | {record['gather_bytes']} |"
            )
    return lines + [""]


def _spread_table(items: list[dict]) -> list[str]:
    spread = [record for record in items if record["check"].startswith("world-size-spread:")]
    if not spread:
        return []
    lines = [
        "Spread across world sizes: each world size's value and gradients against those of the smallest world size,",
        "in eps of the dtype relative to the largest magnitude, with the tolerance of the spec check (worst over cases).",
        "",
        "| implementation | world sizes | dtype | checks | worst value spread (eps) | worst gradient spread (eps) |",
        "|---|---|---|---|---:|---:|",
    ]
    for backend, name in _sorted_implementations(spread):
        mine = [record for record in spread if (record["backend"], record["implementation"]) == (backend, name)]
        for dtype in sorted({record["dtype"] for record in mine}, key=lambda d: ("float64", "float32", "bfloat16").index(d)):
            cell = [record for record in mine if record["dtype"] == dtype]
            sizes = sorted({size for record in cell for size in record["world_size"]})
            lines.append(
                f"| {backend}: {name} | {', '.join(str(size) for size in sizes)} | {dtype} | {_status_cell(cell)} | "
                f"{_worst(cell, 'world-size-spread:value')} | {_worst(cell, 'world-size-spread:grad:')} |"
            )
    return lines + [""]


def _xla_statement(items: list[dict]) -> list[str]:
    natives = [
        record
        for record in items
        if record["implementation"] in (OPTAX_NAMED, OPTAX_LINEAR_NAMED) and record["check"] == "value" and "logits_gathered" in record
    ]
    if not natives:
        return []
    name = natives[0]["implementation"]
    gathered = [record for record in natives if record["logits_gathered"]]
    kinds = sorted({kind for record in natives for kind in record["collectives"]})
    sizes = sorted({record["world_size"] for record in natives})
    units = f"{len(natives)} compiled steps (world sizes {', '.join(str(size) for size in sizes)})"
    if gathered:
        example = gathered[0]
        return [
            f"XLA's compiled collectives for `{name}`: in {len(gathered)} of {units}, a collective carries at least N x V elements,",
            f"so XLA gathers the logits there; first case `{example['case']}` at world size {example['world_size']} ({example['dtype']}):",
            f"largest collective {example['largest_collective_elements']} elements, {example['comm_bytes']} bytes per step.",
            "",
        ]
    largest = max(record["largest_collective_elements"] for record in natives)
    return [
        f"XLA's compiled collectives for `{name}`: in all {units}, the collectives are {', '.join(kinds) or 'none'},",
        f"and the largest carries {largest} elements, fewer than the N x V of any case, so XLA does not gather the logits.",
        "",
    ]


def _details(items: list[dict]) -> list[str]:
    lines = []
    differences = defaultdict(set)
    for record in items:
        if record["status"] == "difference":
            differences[(record["backend"], record["implementation"], record["detail"].split(" Measured:")[0])].add(record["case"])
    if differences:
        lines += ["Documented differences:", ""]
        for (backend, name, description), cases in sorted(differences.items()):
            lines.append(f"- {backend}: {name} ({', '.join(sorted(cases))}): {description.removeprefix('documented difference ')}")
        lines.append("")
    known = {(r["backend"], r["implementation"], r["known_failure"]["reason"], r["known_failure"]["link"]) for r in items if r.get("known_failure")}
    if known:
        lines += ["Known failures:", ""]
        lines += [f"- {backend}: {name}: {reason} ({link})" for backend, name, reason, link in sorted(known)]
        lines.append("")
    failures = [record for record in items if record["status"] in UNEXPECTED]
    if failures:
        lines += ["Unexpected failures:", ""]
        for record in failures[:50]:
            lines.append(
                f"- `{record['backend']}/{record['implementation']}/{record['dtype']}/w{record['world_size']}/{record['case']}/{record['check']}` "
                f"{record['status']}: {short_detail(record['detail'])}"
            )
        if len(failures) > 50:
            lines.append(f"- and {len(failures) - 50} more in sharded.json")
        lines.append("")
    uncovered = Counter((record["backend"], record["implementation"], record["detail"]) for record in items if record["status"] == "unsupported")
    if uncovered:
        lines += ["Not covered:", ""]
        for (backend, name, reason), number in sorted(uncovered.items()):
            lines.append(f"- {backend}: {name}: {reason} ({number} units)")
        lines.append("")
    return lines


def markdown(document: dict) -> str:
    environment = document["environment"]
    selection = document["selection"]
    records = document["records"]
    lines = [
        f"# Sharded conformance results: {environment['environment_id']}",
        "",
        "Generated by the sharded run of lossparity; do not edit by hand.",
        "",
        f"- Command: `{document['command']}`",
        f"- Machine: {environment['cpu']} ({environment['cpu_count']} cores), {environment['platform']}, Python {environment['python']}",
        "- Packages: " + ", ".join(f"{name} {version}" for name, version in sorted(environment["packages"].items())),
        f"- Commit: `{environment['commit']}`; sources SHA-256 `{environment['source_sha256'][:16]}`",
        f"- Seed: {selection['seed']}; device: cpu; world sizes: {', '.join(str(size) for size in selection['world_sizes'])}",
        "- PyTorch: one process per rank, gloo over 127.0.0.1; JAX: one process with XLA_FLAGS=--xla_force_host_platform_device_count set to the world size",
        f"- Wall time: {document['wall_seconds']:.1f} s",
        "",
        "The logits (or the output head's weight) are sharded over the vocabulary; targets, class weights and hidden",
        "states are replicated. Errors are the largest absolute error divided by the largest reference magnitude, in units",
        "of the tested dtype's machine epsilon, against the float64 spec on inputs rounded to that dtype, with the tolerances",
        "of the unsharded checks. The gradient shards are gathered for the check only.",
        "",
        "## Summary",
        "",
        *_summary(records),
        "",
        "## TensorFlow",
        "",
        *TENSORFLOW_STATEMENT,
        "",
    ]
    by_loss = defaultdict(list)
    for record in records:
        by_loss[record["loss"]].append(record)
    for loss in sorted(by_loss):
        items = by_loss[loss]
        lines += [f"## {loss}", "", *_checks_table(items), ""]
        lines += _communication_table(items, loss)
        lines += _xla_statement(items)
        lines += _spread_table(items)
        lines += _details(items)
    return "\n".join(lines).rstrip() + "\n"


def write(document: dict, folder: Path) -> tuple[Path, Path]:
    """Write sharded.json and sharded.md into folder (created if missing); return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / "sharded.json", folder / "sharded.md"
    write_atomically(json_path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    write_atomically(markdown_path, markdown(document))
    return json_path, markdown_path


def terminal_table(document: dict) -> str:
    """Return the summary and the per-loss check tables as plain Markdown text for a terminal."""
    records = document["records"]
    lines = ["Sharded checks", "", *_summary(records), ""]
    for loss in sorted({record["loss"] for record in records}):
        items = [record for record in records if record["loss"] == loss]
        lines += [loss, "", *_checks_table(items), "", *_spread_table(items)]
        failures = [record for record in items if record["status"] in UNEXPECTED]
        for record in failures[:20]:
            lines.append(f"{record['status']}: {record['backend']}/{record['implementation']}/{record['dtype']}/w{record['world_size']}/{record['case']}/{record['check']}: {short_detail(record['detail'], 200)}")
        if failures:
            lines.append("")
    return "\n".join(lines).rstrip()
