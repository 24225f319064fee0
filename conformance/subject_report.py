"""The findings section of each third-party subject in conformance.md.

A finding is one way in which a subject disagrees with the spec: a documented
difference (a convention), a known failure (a defect, with its reason and
link) or an unexpected failure (not yet classified). Each finding is listed
with its worst measured error, the dtypes and modes it shows in, and the
smallest case that shows it, printed in full when it is small enough to paste
into a bug report.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .report import UNEXPECTED, short_detail

# A case whose inputs have at most this many elements in all is printed in full.
PASTE_LIMIT = 48
# Cases of these groups are small enough to rebuild when the report looks for the smallest one.
REBUILT_GROUPS = ("small", "edge", "regression")


def subject_sections(document: dict) -> list[str]:
    run = document["run"]
    subjects = run.get("subjects") or {}
    lines = []
    for label, subject in subjects.items():
        records = [record for record in document["records"] if record["backend"] == label]
        info = run["backends"].get(label, {})
        versions = ", ".join(f"{name} {version}" for name, version in sorted((info.get("versions") or {}).items()))
        lines += [f"## Third-party subject: {label}", ""]
        if subject.get("description"):
            lines += [subject["description"], ""]
        lines += [
            f"- Declarations: `{subject['target']}` on {subject['backend']} tensors"
            + (f", with {', '.join(f'{key}={value}' for key, value in subject['environment'].items())}" if subject.get("environment") else ""),
            f"- Versions: {versions or 'not reported'}",
            f"- Rerun: `lossparity check {subject['target']}` (every loss it declares), or with the options each finding gives",
            "",
        ]
        if info.get("unavailable"):
            lines += [f"Not run: {info['unavailable']}", ""]
            continue
        findings = _findings(records)
        if not findings:
            lines += ["Every check passed or was not covered; no disagreement with the spec was found.", ""]
            continue
        lines += [
            "| finding | kind | loss | dtypes and modes | checks | worst error | smallest case |",
            "|---|---|---|---|---:|---|---|",
        ]
        details = []
        for (kind, name, loss), items in sorted(findings.items(), key=lambda item: (item[0][0], item[0][2], item[0][1])):
            columns = sorted({f"{record['dtype']} {record['mode']}" for record in items})
            smallest, inputs_text = _smallest_case(loss, items, run.get("seed", 0))
            lines.append(
                f"| {name} | {kind} | {loss} | {', '.join(columns)} | {len(items)} | {_worst(items)} | `{smallest}` |"
            )
            example = next(record for record in items if record["case"] == smallest)
            details.append(f"- **{name}** ({loss}, `{smallest}`, {example['dtype']} {example['mode']}, {example['check']}): {_explanation(kind, example)}")
            details.append(
                f"  Reproduce: `lossparity check {subject['target']} --loss {loss} --dtype {example['dtype']} --mode {example['mode']} --group {example['group']}`"
            )
            if inputs_text:
                details.append(f"  Inputs of `{smallest}` (float64 before rounding to the tested dtype): `{inputs_text}`")
        lines += ["", *details, ""]
    return lines


def _findings(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Group the disagreeing records by kind, name and loss."""
    findings = defaultdict(list)
    for record in records:
        if record["status"] == "difference":
            findings[("convention difference", record.get("difference") or "difference", record["loss"])].append(record)
        elif record["status"] == "xfail":
            reason = (record.get("known_failure") or {}).get("reason", "known failure")
            findings[("defect (known failure)", reason.split(":")[0][:80], record["loss"])].append(record)
        elif record["status"] in UNEXPECTED:
            # One finding per case and check, because unclassified failures need not share a cause.
            findings[("unexpected, not classified", f"{record['status']} {record['check']} in {record['case']}", record["loss"])].append(record)
    return findings


def _worst(items: list[dict]) -> str:
    """Describe the largest error of a finding: in eps units where finite, else NaN or an exception."""
    parts = []
    if any("NaN position differs" in record.get("detail", "") for record in items):
        parts.append("NaN where the spec is finite")
    measured = [record for record in items if "NaN position differs" not in record.get("detail", "")]
    errors = [record["max_rel_error_eps"] for record in measured if record.get("max_rel_error_eps") is not None]
    if errors and (max(errors) > 0 or not parts):
        parts.append(f"{max(errors):.3g} eps")
    elif any(record["check"] == "value" and record.get("max_rel_error_eps") is None and "Error" in record.get("detail", "") for record in measured):
        parts.append("raises")
    return "; ".join(parts) or "not finite"


def _explanation(kind: str, record: dict) -> str:
    """Return the finding's description (difference or known failure) followed by what this record measured."""
    detail = record.get("detail", "")
    if kind == "defect (known failure)":
        known = record.get("known_failure") or {}
        return f"{known.get('reason', '')} ({known.get('link', '')}). Measured: {short_detail(detail, 200)}"
    if kind == "convention difference":
        description, _, measured = detail.partition(" Measured: ")
        description = description.removeprefix(f"documented difference {record.get('difference')}: ")
        return f"{description} Measured: {short_detail(measured, 200)}" if measured else description
    return short_detail(detail, 400)


def _smallest_case(loss: str, items: list[dict], seed: int) -> tuple[str, str]:
    """Return the name of the finding's case with the fewest input elements, and its inputs when they are few."""
    from .cases import cases_for

    names = sorted({record["case"] for record in items})
    known = {case.name: case for case in cases_for(loss)}
    sizes = {}
    for name in names:
        case = known.get(name)
        if case is None or case.group not in REBUILT_GROUPS:
            continue
        try:
            inputs, options = case.generate(seed)
        except Exception:  # An unreadable regression file: its error is already a record of the run.
            continue
        sizes[name] = (sum(np.size(value) for value in inputs.values() if value is not None), inputs, options)
    if not sizes:
        return names[0], ""
    name = min(sizes, key=lambda key: (sizes[key][0], key))
    total, inputs, options = sizes[name]
    if total > PASTE_LIMIT:
        return name, ""
    return name, _format_inputs(inputs, options)


def _format_inputs(inputs: dict, options: dict) -> str:
    parts = []
    for key, value in inputs.items():
        if value is None:
            continue
        array = np.asarray(value)
        if array.size == 0:
            parts.append(f"{key}=np.empty({array.shape}, dtype=np.{array.dtype})")
            continue
        text = np.array2string(array.reshape(-1), precision=6, separator=", ", max_line_width=10_000, floatmode="maxprec")
        shape = f".reshape({array.shape})" if array.ndim != 1 else ""
        parts.append(f"{key}=np.array({text}, dtype=np.{array.dtype}){shape}")
    parts += [f"{key}={value!r}" for key, value in options.items()]
    return ", ".join(parts)
