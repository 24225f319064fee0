"""PNG plots of a benchmark: time per loss and shape, cross-entropy memory and bandwidth efficiency."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .report import BANDWIDTH_TARGET, MEMORY_TARGET, best_modes


def _grouped(records, value):
    """Return (case labels, {implementation label: [value per case or None]}) for the best mode of each implementation."""
    best = best_modes([record for record in records if record["status"] == "ok"])
    cases = list(dict.fromkeys(case for case, _, _ in best))
    series = defaultdict(lambda: [None] * len(cases))
    for (case, backend, implementation), record in best.items():
        label = f"{backend}: {implementation} ({record['mode']})"
        series[label][cases.index(case)] = value(record)
    return cases, dict(sorted(series.items()))


def _bar_chart(axes, cases, series, *, log=False):
    count = max(1, len(series))
    width = 0.8 / count
    for offset, (label, values) in enumerate(series.items()):
        positions = [index + (offset - (count - 1) / 2) * width for index in range(len(cases))]
        heights = [0 if value is None else value for value in values]
        axes.bar(positions, heights, width, label=label)
    axes.set_xticks(range(len(cases)))
    axes.set_xticklabels([case.split(" ", 1)[1] if " " in case else case for case in cases], rotation=20, ha="right", fontsize=7)
    if log:
        axes.set_yscale("log")


def write_plots(document: dict, out_dir: Path) -> tuple[list[Path], str]:
    """Write perf-time.png, perf-memory.png and perf-efficiency.png; return their paths and a note when none was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "not drawn, because matplotlib is not installed (it comes with the lossparity[bench] extra)"

    for stale in out_dir.glob("perf-*.png"):
        stale.unlink()  # A plot that this run does not draw must not survive from an earlier one.
    records = document["records"]
    losses = list(dict.fromkeys(record["loss"] for record in records if record["status"] == "ok"))
    if not losses:
        return [], "not drawn, because nothing was measured"
    paths = []

    figure, axes_list = plt.subplots(len(losses), 1, figsize=(12, 4.2 * len(losses)), squeeze=False)
    for axes, loss in zip(axes_list[:, 0], losses):
        chosen = [record for record in records if record["loss"] == loss]
        cases, series = _grouped(chosen, lambda record: (record.get("forward_backward") or record["forward"])["median_ms"])
        _bar_chart(axes, cases, series, log=True)
        axes.set_title(f"{loss}: forward + backward, median ms (best mode of each implementation)")
        axes.set_ylabel("ms (log scale)")
        axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    paths.append(out_dir / "perf-time.png")
    figure.savefig(paths[-1], dpi=90)
    plt.close(figure)

    cross_entropy = [record for record in records if record["loss"] == "cross_entropy"]
    if any("peak_to_logits" in record for record in cross_entropy):
        figure, axes = plt.subplots(figsize=(12, 4.5))
        cases, series = _grouped(cross_entropy, lambda record: record.get("peak_to_logits"))
        _bar_chart(axes, cases, series)
        axes.axhline(MEMORY_TARGET, color="black", linestyle="--", linewidth=1, label=f"target for mirrors: {MEMORY_TARGET:g}x")
        axes.set_title("cross_entropy: peak memory of forward + backward, in multiples of the logits' size")
        axes.set_ylabel("peak / logits bytes")
        axes.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        paths.append(out_dir / "perf-memory.png")
        figure.savefig(paths[-1], dpi=90)
        plt.close(figure)

    if any("efficiency" in record for record in cross_entropy):
        figure, axes = plt.subplots(figsize=(12, 4.5))
        cases, series = _grouped(cross_entropy, lambda record: 100 * record.get("efficiency", 0))
        _bar_chart(axes, cases, series)
        axes.axhline(100 * BANDWIDTH_TARGET, color="black", linestyle="--", linewidth=1, label=f"target: {BANDWIDTH_TARGET:.0%}")
        axes.set_title("cross_entropy: N V (s_in + s_grad) / time, as a share of the measured copy bandwidth")
        axes.set_ylabel("% of copy bandwidth")
        axes.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        paths.append(out_dir / "perf-efficiency.png")
        figure.savefig(paths[-1], dpi=90)
        plt.close(figure)
    return paths, ""
