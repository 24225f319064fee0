"""Benchmark results: derived ratios and efficiencies, perf.json, perf.md, plots and the README link."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from ..report import short_detail, write_atomically

PROBLEMS = ("error", "crash", "timeout")
LINK_START = "<!-- bench-summary:start -->"
LINK_END = "<!-- bench-summary:end -->"

# The targets the benchmark reports on. They are measured, never asserted in tests.
MIRROR_RATIO_TARGET = 1.25
BANDWIDTH_TARGET = 0.5
MEMORY_TARGET = 3.0
BANDWIDTH_SHAPE = {"N": 1024, "V": 128256}
# Linear cross-entropy against the unchunked composition of the same framework:
# forward plus backward within 1.3x its time, and a peak above the inputs within
# 1.5x of the floor (N + V) H s, the two gradients. At the CPU target shape the
# peak must also be at least 4x below the composition's; at shapes whose logits
# are smaller than the gradients, such as N = 1024, H = 2048, V = 32000, no
# chunking can reach 4x, so the reduction is reported there but not judged.
LINEAR_TIME_TARGET = 1.3
LINEAR_MEMORY_REDUCTION_TARGET = 4.0
LINEAR_MEMORY_SHAPE = {"N": 2048, "H": 1024, "V": 128256}  # In float32.
LINEAR_FLOOR_TARGET = 1.5
MIB = 2**20


def _ok(record: dict) -> bool:
    return record["status"] == "ok"


def _median_seconds(record: dict, part: str) -> float | None:
    timing = record.get(part)
    return None if not timing else timing["median_ms"] / 1e3


def _peak_bytes(record: dict, backends: dict) -> int | None:
    """Return the forward-plus-backward peak with the inputs counted, or None when memory was not measured."""
    memory = record.get("memory") or {}
    extra = memory.get("forward_backward_bytes")
    if extra is None:
        return None
    counts_inputs = backends.get(record["backend"], {}).get("memory_counts_inputs")
    if counts_inputs:
        # The inputs are live during the call. TensorFlow's CPU allocator does not
        # count tensors of a few KiB, so its reading can fall below them.
        return max(extra, record.get("input_bytes", 0))
    return extra + record.get("input_bytes", 0)


def annotate(document: dict) -> None:
    """Add to each measured record its ratio to the fastest of its case, its efficiency and its memory ratio.

    Also store the target tables under document["targets"].
    """
    records = [record for record in document["records"] if _ok(record)]
    measured_bandwidth = document["machine"]["bandwidth"]
    bandwidth = measured_bandwidth["best_gb_per_s"] * 1e9 if measured_bandwidth else None
    by_case = defaultdict(list)
    for record in records:
        by_case[record["case"]].append(record)

    for case_records in by_case.values():
        for part in ("forward", "forward_backward"):
            times = [_median_seconds(record, part) for record in case_records if _median_seconds(record, part)]
            fastest = min(times) if times else None
            for record in case_records:
                seconds = _median_seconds(record, part)
                if fastest and seconds:
                    record.setdefault("ratio_to_fastest", {})[part] = round(seconds / fastest, 3)

    for record in records:
        seconds = _median_seconds(record, "forward_backward")
        if record.get("min_bytes") and seconds and bandwidth:
            record["gb_per_s_by_min_bytes"] = round(record["min_bytes"] / seconds / 1e9, 3)
            record["efficiency"] = round(record["min_bytes"] / seconds / bandwidth, 4)
        peak = _peak_bytes(record, document["backends"])
        if peak is None:
            continue
        record["peak_bytes"] = peak
        if record["loss"] == "cross_entropy" and record.get("logits_bytes"):
            record["peak_to_logits"] = round(peak / record["logits_bytes"], 3)
        if record.get("gradient_bytes"):
            record["peak_above_inputs_bytes"] = max(0, peak - record.get("input_bytes", 0))
            record["peak_to_floor"] = round(record["peak_above_inputs_bytes"] / record["gradient_bytes"], 3)

    document["targets"] = {
        "mirror_vs_native": _mirror_vs_native(records),
        "bandwidth": _bandwidth_rows(records),
        "memory": _memory_rows(records),
        "linear": _linear_rows(records),
    }


def best_modes(records: list[dict]) -> dict[tuple, dict]:
    """Return, per (case, backend, implementation), the record of the mode with the fastest forward plus backward."""
    best: dict[tuple, dict] = {}
    for record in records:
        key = (record["case"], record["backend"], record["implementation"])
        seconds = _median_seconds(record, "forward_backward") or _median_seconds(record, "forward")
        if seconds is None:
            continue
        current = best.get(key)
        if current is None or seconds < (_median_seconds(current, "forward_backward") or _median_seconds(current, "forward")):
            best[key] = record
    return best


def _mirror_vs_native(records: list[dict]) -> list[dict]:
    best = best_modes(records)
    rows = []
    for (case, backend, implementation), mirror in best.items():
        # Linear cross-entropy has its own table, against the unchunked composition mode by mode.
        if mirror["kind"] != "mirror" or mirror["loss"] == "linear_cross_entropy":
            continue
        natives = [
            record for (other_case, other_backend, _), record in best.items()
            if other_case == case and other_backend == backend and record["kind"] == "native"
        ]
        if not natives:
            continue
        part = "forward_backward" if mirror.get("forward_backward") else "forward"
        native = min(natives, key=lambda record: _median_seconds(record, part) or float("inf"))
        ratio = _median_seconds(mirror, part) / _median_seconds(native, part)
        rows.append(
            {
                "loss": mirror["loss"],
                "case": case,
                "backend": backend,
                "mirror_mode": mirror["mode"],
                "mirror_ms": round(_median_seconds(mirror, part) * 1e3, 3),
                "native": native["implementation"],
                "native_mode": native["mode"],
                "native_ms": round(_median_seconds(native, part) * 1e3, 3),
                "ratio": round(ratio, 3),
                "meets_target": ratio <= MIRROR_RATIO_TARGET,
            }
        )
    return rows


def _bandwidth_rows(records: list[dict]) -> list[dict]:
    """Return the best efficiency per backend on the cross-entropy cases of the bandwidth target's shape."""
    rows = {}
    for record in records:
        if record["loss"] != "cross_entropy" or record["dims"] != BANDWIDTH_SHAPE or "efficiency" not in record:
            continue
        key = (record["case"], record["backend"])
        if key not in rows or record["efficiency"] > rows[key]["efficiency"]:
            rows[key] = {
                "case": record["case"],
                "backend": record["backend"],
                "implementation": record["implementation"],
                "mode": record["mode"],
                "forward_backward_ms": record["forward_backward"]["median_ms"],
                "gb_per_s_by_min_bytes": record["gb_per_s_by_min_bytes"],
                "efficiency": record["efficiency"],
                "meets_target": record["efficiency"] >= BANDWIDTH_TARGET,
            }
    return sorted(rows.values(), key=lambda row: (row["case"], -row["efficiency"]))


def _memory_rows(records: list[dict]) -> list[dict]:
    rows = []
    for record in records:
        if record["loss"] != "cross_entropy" or record["kind"] != "mirror" or "peak_to_logits" not in record:
            continue
        rows.append(
            {
                "case": record["case"],
                "backend": record["backend"],
                "mode": record["mode"],
                "peak_mib": round(record["peak_bytes"] / MIB, 1),
                "peak_to_logits": record["peak_to_logits"],
                "meets_target": record["peak_to_logits"] <= MEMORY_TARGET,
            }
        )
    return rows


def _linear_rows(records: list[dict]) -> list[dict]:
    """Return, per case, backend and mode, the linear cross-entropy mirror against each native of that mode."""
    rows = []
    for mirror in records:
        if mirror["loss"] != "linear_cross_entropy" or mirror["kind"] != "mirror" or not mirror.get("forward_backward"):
            continue
        for native in records:
            same_unit = (native["case"], native["backend"], native["mode"]) == (mirror["case"], mirror["backend"], mirror["mode"])
            if not same_unit or native["kind"] != "native" or not native.get("forward_backward"):
                continue
            time_ratio = _median_seconds(mirror, "forward_backward") / _median_seconds(native, "forward_backward")
            row = {
                "case": mirror["case"],
                "backend": mirror["backend"],
                "mode": mirror["mode"],
                "native": native["implementation"],
                "mirror_ms": round(_median_seconds(mirror, "forward_backward") * 1e3, 3),
                "native_ms": round(_median_seconds(native, "forward_backward") * 1e3, 3),
                "time_ratio": round(time_ratio, 3),
                "meets_time_target": time_ratio <= LINEAR_TIME_TARGET,
                "floor_mib": round(mirror["gradient_bytes"] / MIB, 1),
            }
            if "peak_above_inputs_bytes" in mirror and "peak_above_inputs_bytes" in native:
                mirror_peak, native_peak = mirror["peak_above_inputs_bytes"], native["peak_above_inputs_bytes"]
                row.update(
                    mirror_peak_mib=round(mirror_peak / MIB, 1),
                    native_peak_mib=round(native_peak / MIB, 1),
                    memory_reduction=round(native_peak / mirror_peak, 3) if mirror_peak else None,
                    peak_to_floor=mirror["peak_to_floor"],
                )
                if mirror["dims"] == LINEAR_MEMORY_SHAPE and mirror["dtype"] == "float32":
                    row["meets_memory_target"] = bool(mirror_peak) and native_peak / mirror_peak >= LINEAR_MEMORY_REDUCTION_TARGET
                row["meets_floor_target"] = mirror["peak_to_floor"] <= LINEAR_FLOOR_TARGET
            rows.append(row)
    return rows


# Markdown -------------------------------------------------------------------


def _timing_cell(timing: dict | None) -> str:
    if not timing:
        return ""
    return f"{timing['median_ms']:.3g} ({timing['p20_ms']:.3g}-{timing['p80_ms']:.3g})"


def _yes_no(value: bool) -> str:
    return "yes" if value else "**no**"


def _header_lines(document: dict) -> list[str]:
    environment, run, machine = document["environment"], document["run"], document["machine"]
    bandwidth, exp = machine["bandwidth"] or {}, machine["exp"]
    repeats = run["repeats"]
    if bandwidth:
        bandwidth_cell = f"{bandwidth['best_gb_per_s']:.1f} GB/s (median {bandwidth['median_gb_per_s']:.1f})"
        bandwidth_line = f"- Bandwidth: {bandwidth['method']}, best of {bandwidth['repeats']}."
        if "one_thread_best_gb_per_s" in bandwidth:
            bandwidth_line += f" One thread alone copies {bandwidth['one_thread_best_gb_per_s']:.1f} GB/s."
    else:
        bandwidth_cell = "not measured"
        bandwidth_line = "- Bandwidth: no backend measured the GPU's copy bandwidth, so no efficiency is given."
    load_before, load_after = machine.get("load_average_before"), machine.get("load_average_after")
    load_line = []
    if load_before and load_after:
        load_line = [
            f"- Load average (1, 5, 15 min) before the run {', '.join(f'{value:.2f}' for value in load_before)}, "
            f"after it {', '.join(f'{value:.2f}' for value in load_after)}."
            + (
                " **The machine was busy before the run, so other work shared the cores and the times are inflated.**"
                if load_before[0] > 0.5
                else ""
            )
        ]
    lines = [
        f"# Benchmark: {environment['environment_id']}",
        "",
        f"Command: `{run['command']}`, preset `{run['preset']}`: {run['preset_description']}.",
        f"Wall time {run['wall_seconds']:.0f} s. Commit `{environment['commit']}`, sources SHA-256 `{environment['source_sha256'][:16]}`.",
        "",
        "## Machine",
        "",
        "| CPU | cores | copy bandwidth | exp throughput |",
        "|---|---:|---:|---:|",
        f"| {environment['cpu']} | {environment['cpu_count']} | {bandwidth_cell} | {exp['per_thread_per_s'] / 1e9:.2f} G exp/s per thread |",
        "",
        bandwidth_line,
        *load_line,
        "- Efficiency is the minimal traffic of a cross-entropy forward and backward, N V (s_in + s_grad) bytes",
        "  (read the logits once, write their gradient once), divided by the median time and by this bandwidth.",
        f"- Exp throughput: {exp['method']}."
        + (
            f" At one exponential per logit, N x V logits on all {environment['cpu_count']} cores need at least"
            f" N V / ({exp['per_thread_per_s'] / 1e9:.2f} G/s x {environment['cpu_count']}) seconds, an estimate that assumes perfect scaling."
            if environment["device"] == "cpu"
            else " It is the host's, listed for reference; the frameworks ran on the GPU."
        ),
        "",
        "## How it is measured",
        "",
        "- Each backend runs in its own process, one after the other. Every measurement makes an untimed first call"
        + (f" and {repeats['warmup'] - 1} more warm-up calls" if repeats["warmup"] > 1 else "")
        + f", then at least {repeats['minimum']} timed calls until {repeats['seconds']:g} s have passed"
        + f" (at most {repeats['maximum']}).",
        "- Times are in milliseconds: the median, with the 20th and 80th percentiles in brackets. \"x fastest\" divides",
        "  the forward-plus-backward median by the fastest one of the same case in this run, over every backend and mode.",
        "- Forward: the loss with no gradient recorded (`torch.no_grad` for PyTorch). Forward plus backward: the loss and",
        "  its vector-Jacobian product with a cotangent of ones, with respect to every differentiable float input.",
        "- Compiled: `torch.compile(fullgraph=True, dynamic=False)`, `jax.jit`, `tf.function(jit_compile=True)`. The",
        "  first call is listed separately and is not in the medians. Compiled, it is the compilation from an empty",
        "  torch.compile cache (fresh for each run) plus one execution; eager, it includes one-time set-up.",
        "- Peak memory is that of one forward-plus-backward call with the inputs counted, measured per backend as follows:",
    ]
    for name, backend in document["backends"].items():
        if backend.get("unavailable"):
            lines.append(f"  - {name}: not run: {backend['unavailable']}")
        else:
            versions = ", ".join(f"{package} {version}" for package, version in backend["versions"].items())
            lines.append(f"  - {name} ({versions}): {backend.get('memory_method') or 'not measured'}.")
    lines.append("")
    return lines


def _target_lines(document: dict) -> list[str]:
    targets = document["targets"]
    lines = [
        "## Targets",
        "",
        f"These are measured, never asserted in tests. A mirror should be within {MIRROR_RATIO_TARGET}x of its",
        "framework's fastest native built-in for the same case (forward plus backward, the best mode of each); the best",
        f"cross-entropy at N = 1024, V = 128256 should reach {BANDWIDTH_TARGET:.0%} of the copy bandwidth; a cross-entropy",
        f"mirror's peak memory should stay within {MEMORY_TARGET:g}x the logits' size.",
        "",
        "### Mirrors against natives",
        "",
        "| case | backend | mirror (mode) | fastest native (mode) | ratio | within target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in targets["mirror_vs_native"]:
        lines.append(
            f"| {row['case']} | {row['backend']} | {row['mirror_ms']:.3g} ms ({row['mirror_mode']}) | "
            f"{row['native']}: {row['native_ms']:.3g} ms ({row['native_mode']}) | {row['ratio']:.2f} | {_yes_no(row['meets_target'])} |"
        )
    lines += [
        "",
        "### Cross-entropy against the memory bandwidth",
        "",
        "| case | backend | best implementation (mode) | forward + backward | GB/s by N V (s_in + s_grad) | of copy bandwidth | within target |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in targets["bandwidth"]:
        lines.append(
            f"| {row['case']} | {row['backend']} | {row['implementation']} ({row['mode']}) | {row['forward_backward_ms']:.3g} ms | "
            f"{row['gb_per_s_by_min_bytes']:.1f} | {row['efficiency']:.0%} | {_yes_no(row['meets_target'])} |"
        )
    lines += [
        "",
        "### Cross-entropy mirrors' peak memory",
        "",
        "| case | backend | mode | peak | x logits | within target |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in targets["memory"]:
        lines.append(
            f"| {row['case']} | {row['backend']} | {row['mode']} | {row['peak_mib']:.0f} MiB | {row['peak_to_logits']:.2f} | "
            f"{_yes_no(row['meets_target'])} |"
        )
    lines += _linear_target_lines(targets.get("linear", []))
    return lines


def _linear_target_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return [""]
    lines = [
        "",
        "### Linear cross-entropy against the unchunked composition",
        "",
        f"Targets: forward plus backward within {LINEAR_TIME_TARGET:g}x the time of the same framework's unchunked composition",
        f"(matrix product, then cross-entropy) in the same mode; a peak above the inputs within {LINEAR_FLOOR_TARGET:g}x of the floor",
        "(N + V) H s, the two gradients the call must return; and at N = 2048, H = 1024, V = 128256 a peak above the inputs at least",
        f"{LINEAR_MEMORY_REDUCTION_TARGET:g}x smaller than the composition's. Where the logits are smaller than the gradients no chunking",
        "can reach that reduction, so it is shown but not judged (n/a). Peak above the inputs is the peak memory of one",
        "forward-plus-backward call minus the inputs' bytes. For float16 and bfloat16 inputs the mirrors sum the gradients in",
        "float32 and hold a float32 copy of the weight, so those rows exceed the floor of the input dtype by design.",
        "",
        "| case | backend | mode | mirror | unchunked | time ratio | within target | mirror peak above inputs | unchunked | reduction | within target | floor | x floor | within target |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        memory_cells = "| | | | | | "
        if "mirror_peak_mib" in row:
            reduction = f"{row['memory_reduction']:.1f}x" if row["memory_reduction"] is not None else "n/a"
            judged = _yes_no(row["meets_memory_target"]) if "meets_memory_target" in row else "n/a"
            memory_cells = (
                f"| {row['mirror_peak_mib']:.0f} MiB | {row['native_peak_mib']:.0f} MiB | {reduction} | {judged} | "
                f"{row['floor_mib']:.0f} MiB | {row['peak_to_floor']:.2f} | {_yes_no(row['meets_floor_target'])} |"
            )
        lines.append(
            f"| {row['case']} | {row['backend']} | {row['mode']} | {row['mirror_ms']:.4g} ms | {row['native']}: {row['native_ms']:.4g} ms | "
            f"{row['time_ratio']:.2f} | {_yes_no(row['meets_time_target'])} " + memory_cells
        )
    lines.append("")
    return lines


def _case_lines(document: dict) -> list[str]:
    lines = ["## Every measurement", ""]
    by_case = defaultdict(list)
    for record in document["records"]:
        by_case[record["case"]].append(record)
    for case, records in by_case.items():
        measured = sorted(
            (record for record in records if _ok(record)),
            key=lambda record: (record.get("ratio_to_fastest", {}).get("forward_backward") or record.get("ratio_to_fastest", {}).get("forward") or 0),
        )
        if not measured:
            continue
        lines += [
            f"### {case}",
            "",
            "| backend | implementation | kind | mode | forward ms | forward + backward ms | x fastest | first call s | peak memory | efficiency |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for record in measured:
            ratio = record.get("ratio_to_fastest", {})
            ratio_cell = ratio.get("forward_backward", ratio.get("forward"))
            first = record["first_call_seconds"]
            first_seconds = first.get("forward_backward", first.get("forward"))
            first_cell = "" if first_seconds is None else f"{first_seconds:.3g}"
            memory = ""
            if "peak_bytes" in record:
                memory = f"{record['peak_bytes'] / MIB:.0f} MiB"
                if "peak_to_logits" in record:
                    memory += f" ({record['peak_to_logits']:.2f}x logits)"
                if "peak_to_floor" in record:
                    memory += f" ({record['peak_to_floor']:.2f}x floor above inputs)"
            efficiency = f"{record['efficiency']:.0%}" if "efficiency" in record else ""
            lines.append(
                f"| {record['backend']} | {record['implementation']} | {record['kind']} | {record['mode']} | "
                f"{_timing_cell(record.get('forward'))} | {_timing_cell(record.get('forward_backward'))} | "
                f"{ratio_cell:.2f} | {first_cell} | {memory} | {efficiency} |"
            )
        lines.append("")
    return lines


def _not_measured_lines(document: dict) -> list[str]:
    skipped = [record for record in document["records"] if not _ok(record)]
    if not skipped:
        return []
    lines = ["## Not measured", "", "| case | backend | implementation | mode | status | reason |", "|---|---|---|---|---|---|"]
    for record in skipped:
        reason = short_detail(record.get("detail", ""), 200).replace("|", "\\|")
        lines.append(
            f"| {record.get('case', '*')} | {record['backend']} | {record.get('implementation', '*')} | "
            f"{record.get('mode', '*')} | {record['status']} | {reason} |"
        )
    lines.append("")
    return lines


def _case_note_lines(document: dict) -> list[str]:
    notes = document["run"].get("case_notes") or {}
    if not notes:
        return []
    return ["## Cases measured differently", ""] + [f"- {case}: {note}." for case, note in notes.items()] + [""]


def markdown(document: dict, plots: list[str]) -> str:
    lines = _header_lines(document) + _target_lines(document) + _case_note_lines(document)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(name).stem}]({name})" for name in plots] + [""]
    lines += _case_lines(document) + _not_measured_lines(document)
    return "\n".join(lines)


def write(document: dict, out_dir: Path) -> dict[str, Path]:
    """Write perf.json, the plots and perf.md into out_dir; return their paths by kind."""
    from .plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "perf.json"
    write_atomically(json_path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    plots, note = write_plots(document, out_dir)
    markdown_path = out_dir / "perf.md"
    text = markdown(document, [path.name for path in plots])
    if note:
        text += f"\nPlots: {note}\n"
    write_atomically(markdown_path, text)
    return {"json": json_path, "markdown": markdown_path, **{path.stem: path for path in plots}}


def update_readme_link(readme: Path, document: dict, markdown_path: Path) -> None:
    """Replace the block between the benchmark markers in the README with a link and the headline numbers."""
    if not readme.exists():
        return
    text = readme.read_text(encoding="utf-8")
    if LINK_START not in text or LINK_END not in text:
        return
    link = markdown_path.relative_to(readme.parent).as_posix() if markdown_path.is_relative_to(readme.parent) else str(markdown_path)
    targets = document["targets"]
    best = max(targets["bandwidth"], key=lambda row: row["efficiency"], default=None)
    block = [LINK_START, f"Benchmark tables and plots: [{link}]({link}), made by `{document['run']['command']}`."]
    if best:
        block.append(
            f"The fastest {best['case']} ({best['backend']} {best['implementation']}, "
            f"{best['mode']}) moves {best['gb_per_s_by_min_bytes']:.1f} GB/s by its minimal traffic: "
            f"{best['efficiency']:.0%} of this machine's measured copy bandwidth."
        )
    block.append(LINK_END)
    head, _, rest = text.partition(LINK_START)
    _, _, tail = rest.partition(LINK_END)
    write_atomically(readme, head + "\n".join(block) + tail)


def print_summary(document: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Wide enough for the case names when stdout is a file or a pipe, where rich would assume 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="mirrors against natives (forward + backward, best mode of each)")
    for column in ("case", "backend", "mirror ms", "fastest native", "native ms", "ratio"):
        table.add_column(column)
    for row in document["targets"]["mirror_vs_native"]:
        ratio = f"{row['ratio']:.2f}" if row["meets_target"] else f"[red]{row['ratio']:.2f}[/red]"
        table.add_row(escape(row["case"]), row["backend"], f"{row['mirror_ms']:.3g}", escape(row["native"]), f"{row['native_ms']:.3g}", ratio)
    if table.row_count:
        console.print(table)
    for row in document["targets"]["bandwidth"]:
        console.print(
            f"{escape(row['case'])}: {row['backend']} {escape(row['implementation'])} ({row['mode']}) "
            f"reaches {row['efficiency']:.0%} of the copy bandwidth",
            highlight=False,
        )
    for record in document["records"]:
        if record["status"] in PROBLEMS:
            console.print(
                f"[red]{record['status'].upper()}[/red] {record['backend']}/{escape(str(record.get('implementation')))}/"
                f"{record.get('mode')}/{escape(str(record.get('case')))}: {escape(short_detail(record.get('detail', '')))}",
                highlight=False,
            )
    console.print(f"wall time {document['run']['wall_seconds']:.0f} s")
