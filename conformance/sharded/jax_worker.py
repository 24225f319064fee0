"""A JAX sharded job: ``python -m conformance.sharded.jax_worker --job DIR --world-size W``.

One process with W CPU devices, which XLA_FLAGS=--xla_force_host_platform_device_count=W
must create before jax is imported (the module sets it when it is missing).
Each unit is compiled once with jax.jit as one step, value and vector-Jacobian
product together, and the compiled HLO's collectives are read to measure the
bytes the step communicates. Results go to DIR/rank-0.jsonl, one JSON line per
unit, with the value and the full gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path


def _set_device_count(world_size: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={world_size}".strip()


# HLO element types and their sizes in bytes.
HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
HLO_KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
# "%name = SHAPE OP(" for a synchronous collective or the -done half of an asynchronous one;
# the -start half is skipped, so an asynchronous collective is counted once.
HLO_COLLECTIVE = re.compile(r"=\s*(\(.*?\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+(" + "|".join(HLO_KINDS) + r")(-done)?\(")
HLO_ARRAY = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def hlo_collectives(hlo_text: str, world_size: int) -> tuple[dict, list[dict]]:
    """Return the calls and bytes per collective kind of compiled HLO text, and each collective's result shapes.

    The bytes of one collective are the larger of its input and result on one
    device: the result of an all-reduce, all-gather, permute or all-to-all, and
    for a reduce-scatter its result times world_size (the input it reduces).
    With world_size 1 the calls are counted at 0 bytes: XLA keeps collectives
    over one device in the compiled HLO (jax 0.10.2 on CPU), but they move no data.
    """
    totals: dict[str, dict[str, int]] = {}
    found = []
    for line in hlo_text.splitlines():
        match = HLO_COLLECTIVE.search(line)
        if match is None:
            continue
        shape_text, kind = match.group(1), match.group(2)
        shapes = []
        size = 0
        for element_type, dims in HLO_ARRAY.findall(shape_text):
            if element_type not in HLO_BYTES:
                continue
            shape = tuple(int(dim) for dim in dims.split(",") if dim)
            count = 1
            for dim in shape:
                count *= dim
            shapes.append(shape)
            size += count * HLO_BYTES[element_type]
        if kind == "reduce-scatter":
            size *= world_size
        if world_size == 1:
            size = 0  # Every replica group has one device, so the collective moves no data.
        entry = totals.setdefault(kind, {"calls": 0, "bytes": 0})
        entry["calls"] += 1
        entry["bytes"] += size
        found.append({"kind": kind, "shapes": shapes, "bytes": size})
    return totals, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="job folder containing plan.json; results go to rank-0.jsonl there")
    parser.add_argument("--world-size", type=int, required=True, help="number of CPU devices in the mesh")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _set_device_count(args.world_size)

    if os.environ.get("LOSSPARITY_SHARDED_FAIL_RANK") == "0":
        print("exiting with status 3 (LOSSPARITY_SHARDED_FAIL_RANK)", file=sys.stderr)
        return 3

    import jax

    jax.config.update("jax_enable_x64", True)  # For the float64 debugging dtype; targets stay int32.
    devices = jax.devices("cpu")
    if len(devices) < args.world_size:
        print(f"found {len(devices)} CPU devices; expected {args.world_size} (XLA_FLAGS={os.environ.get('XLA_FLAGS')!r})", file=sys.stderr)
        return 2

    from . import jax_units

    mesh = jax.sharding.Mesh(devices[: args.world_size], ("v",))
    plan = json.loads((args.job / "plan.json").read_text())
    with open(args.job / "rank-0.jsonl", "a", encoding="utf-8") as results:
        for unit in plan["units"]:
            started = time.perf_counter()
            try:
                line = jax_units.run_unit(unit, args.seed, mesh, args.world_size)
                line["collectives"], line["hlo_collectives"] = hlo_collectives(line.pop("hlo"), args.world_size)
                line["seconds"] = round(time.perf_counter() - started, 4)
            except Exception as error:  # A failing implementation is a result; the job goes on to the next unit.
                lines = traceback.format_exception_only(type(error), error)
                line = {"status": "error", "detail": "".join(lines).strip()[:2000]}
            results.write(json.dumps({"unit": unit["id"], **line}) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
