"""One rank of a PyTorch sharded job: ``python -m conformance.sharded.torch_worker --job DIR --rank R --world-size W ...``.

The parent starts world_size of these processes, which join one gloo process
group over 127.0.0.1. Every collective has the process group's timeout. Each
rank runs the units of DIR/plan.json in order and appends one JSON line per
unit to DIR/rank-R.jsonl, flushed at once, with the value, its own shard of
each gradient and the bytes of the collectives it called. The parent gathers
the shards for the checks, and that gather is not part of the measured traffic.

A unit that raises writes an error line. The ranks then meet in the rendezvous
store: when every rank left the unit they go on, else the rank that raised
exits with EXIT_UNIT_ERROR and the parent restarts the job after the unit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np

# Gloo's transport must use the loopback interface too, not only the rendezvous.
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from backends.torch.vocab_parallel import shard_bounds, vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy  # noqa: E402

from .cases import LOSS_PARALLEL, MIRROR, case_named, prepare  # noqa: E402

EXIT_UNIT_ERROR = 17  # The exit status of a rank whose unit raised while a peer was still inside the unit.
PEER_WAIT = timedelta(seconds=5)
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}

# Collective operators as the dispatcher names them (namespace, operator) -> kind. dist.all_reduce
# dispatches c10d::allreduce_, DTensor dispatches the functional collectives of _c10d_functional.
COLLECTIVE_KINDS = {
    "allreduce_": "all-reduce",
    "allreduce_coalesced_": "all-reduce",
    "all_reduce": "all-reduce",
    "all_reduce_coalesced": "all-reduce",
    "allgather_": "all-gather",
    "_allgather_base_": "all-gather",
    "allgather_coalesced_": "all-gather",
    "allgather_into_tensor_coalesced_": "all-gather",
    "all_gather_into_tensor": "all-gather",
    "all_gather_into_tensor_coalesced": "all-gather",
    "reduce_scatter_": "reduce-scatter",
    "_reduce_scatter_base_": "reduce-scatter",
    "reduce_scatter_tensor": "reduce-scatter",
    "reduce_scatter_tensor_coalesced": "reduce-scatter",
    "reduce_scatter_tensor_coalesced_": "reduce-scatter",
    "alltoall_": "all-to-all",
    "alltoall_base_": "all-to-all",
    "all_to_all_single": "all-to-all",
    "broadcast_": "broadcast",
    "broadcast": "broadcast",
    "gather_": "gather",
    "scatter_": "scatter",
    "reduce_": "reduce",
}
COLLECTIVE_NAMESPACES = ("c10d", "_c10d_functional", "c10d_functional", "_c10d_functional_autograd")


def _tensor_bytes(tree) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(leaf.numel() * leaf.element_size() for leaf in leaves if isinstance(leaf, torch.Tensor))


class CollectiveBytes(TorchDispatchMode):
    """Count the calls and bytes of every collective dispatched inside the mode, by kind.

    The bytes of one call are the larger of its tensor inputs and outputs on
    this rank: the buffer of an all-reduce, the gathered result of an
    all-gather, the full input of a reduce-scatter. Like
    torch.distributed.tensor.debug.CommDebugMode, which counts calls but
    not bytes (torch 2.13), the mode declines DTensor operands, so DTensor
    first lowers them to the plain-tensor collectives counted here.
    """

    def __init__(self, world_size: int):
        super().__init__()
        self.world_size = world_size
        self.collectives: dict[str, dict[str, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(issubclass(kind, DTensor) for kind in types):
            return NotImplemented
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        namespace, _, name = func._schema.name.partition("::")
        kind = COLLECTIVE_KINDS.get(name) if namespace in COLLECTIVE_NAMESPACES else None
        if kind is not None:
            entry = self.collectives.setdefault(kind, {"calls": 0, "bytes": 0})
            entry["calls"] += 1
            # A collective over one rank (DTensor still calls one) moves no data.
            if self.world_size > 1:
                entry["bytes"] += max(_tensor_bytes((args, kwargs)), _tensor_bytes(output))
        return output


def _as_list(tensor: torch.Tensor) -> list | float:
    return tensor.detach().to(torch.float64).cpu().numpy().tolist()


def _backward(loss, cotangent: np.ndarray) -> None:
    torch.autograd.backward(loss, torch.as_tensor(cotangent, dtype=loss.dtype))


def _run_cross_entropy_mirror(prepared, dtype, group, rank, world_size):
    inputs = prepared.inputs
    vocab = inputs["logits"].shape[1]
    start, stop = shard_bounds(vocab, world_size, rank)
    local = torch.tensor(inputs["logits"][:, start:stop]).to(dtype).requires_grad_()
    targets = torch.tensor(inputs["targets"])
    weight = None if inputs["weight"] is None else torch.tensor(inputs["weight"]).to(dtype)
    with CollectiveBytes(world_size) as counter:
        loss = vocab_parallel_cross_entropy(local, targets, vocab_size=vocab, group=group, weight=weight, **prepared.options)
        _backward(loss, prepared.cotangent)
    return loss, {"logits": local.grad}, counter


def _run_loss_parallel(prepared, dtype, group, rank, world_size, mesh):
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.parallel import loss_parallel

    inputs = prepared.inputs
    rows, vocab = inputs["logits"].shape
    start, stop = shard_bounds(vocab, world_size, rank)
    local = torch.tensor(inputs["logits"][:, start:stop]).to(dtype).requires_grad_()
    targets = torch.tensor(inputs["targets"])
    weight = None if inputs["weight"] is None else torch.tensor(inputs["weight"]).to(dtype)
    options = prepared.options
    with CollectiveBytes(world_size) as counter, loss_parallel():
        logits = DTensor.from_local(local, mesh, [Shard(1)], run_check=False, shape=(rows, vocab), stride=(vocab, 1))
        loss = torch.nn.functional.cross_entropy(
            logits, targets, weight=weight, ignore_index=options.get("ignore_index", -100), reduction=options.get("reduction", "mean")
        )
        if loss.ndim:
            cotangent = DTensor.from_local(torch.as_tensor(prepared.cotangent, dtype=loss.dtype), mesh, [Replicate()], run_check=False)
            loss.backward(cotangent)
        else:
            loss.backward()
    return loss.to_local(), {"logits": local.grad}, counter


def _run_linear_mirror(prepared, dtype, group, rank, world_size):
    inputs = prepared.inputs
    vocab = inputs["weight"].shape[0]
    start, stop = shard_bounds(vocab, world_size, rank)
    hidden = torch.tensor(inputs["hidden"]).to(dtype).requires_grad_()
    local_weight = torch.tensor(inputs["weight"][start:stop]).to(dtype).requires_grad_()
    local_bias = None
    if inputs["bias"] is not None:
        local_bias = torch.tensor(inputs["bias"][start:stop]).to(dtype).requires_grad_()
    targets = torch.tensor(inputs["targets"])
    with CollectiveBytes(world_size) as counter:
        loss = vocab_parallel_linear_cross_entropy(
            hidden, local_weight, targets, vocab_size=vocab, local_bias=local_bias, group=group, **prepared.options
        )
        _backward(loss, prepared.cotangent)
    gradients = {"hidden": hidden.grad, "weight": local_weight.grad}
    if local_bias is not None:
        gradients["bias"] = local_bias.grad
    return loss, gradients, counter


def run_unit(unit: dict, seed: int, group, rank: int, world_size: int, mesh) -> dict:
    """Run one unit on this rank and return its JSON line: value, local gradient shards and collective bytes."""
    case = case_named(unit["case"])
    prepared = prepare(case, unit["dtype"], seed)
    dtype = TORCH_DTYPES[unit["dtype"]]
    started = time.perf_counter()
    if unit["implementation"] == MIRROR and case.loss == "cross_entropy":
        value, gradients, counter = _run_cross_entropy_mirror(prepared, dtype, group, rank, world_size)
    elif unit["implementation"] == LOSS_PARALLEL:
        value, gradients, counter = _run_loss_parallel(prepared, dtype, group, rank, world_size, mesh)
    elif unit["implementation"] == MIRROR and case.loss == "linear_cross_entropy":
        value, gradients, counter = _run_linear_mirror(prepared, dtype, group, rank, world_size)
    else:
        raise ValueError(f"implementation {unit['implementation']!r} for {case.loss} not found in the PyTorch sharded worker")
    return {
        "status": "ok",
        "value": _as_list(value),
        "gradients": {name: None if gradient is None else _as_list(gradient) for name, gradient in gradients.items()},
        "collectives": counter.collectives,
        "seconds": round(time.perf_counter() - started, 4),
    }


def _peers_left_unit(store, keys: list[str]) -> bool:
    """Wait up to PEER_WAIT for every rank to finish or fail the unit; False when one is still inside it.

    A rank that raised may go on only when no peer waits in one of the unit's
    collectives. A too short wait costs a restart of the job, never a wrong result.
    """
    try:
        store.wait(keys, PEER_WAIT)
    except RuntimeError:  # The store's wait timed out (torch raises DistStoreError, a RuntimeError).
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="job folder containing plan.json; results go to rank-R.jsonl there")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 of rank 0's rendezvous store")
    parser.add_argument("--collective-timeout", type=float, required=True, help="seconds before a collective or the rendezvous fails")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # Fault injection for the harness's own tests: this rank exits before joining the group.
    if os.environ.get("LOSSPARITY_SHARDED_FAIL_RANK") == str(args.rank):
        print(f"rank {args.rank}: exiting with status 3 (LOSSPARITY_SHARDED_FAIL_RANK)", file=sys.stderr)
        return 3

    plan = json.loads((args.job / "plan.json").read_text())
    timeout = timedelta(seconds=args.collective_timeout)
    store = dist.TCPStore("127.0.0.1", args.port, args.world_size, is_master=args.rank == 0, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=args.rank, world_size=args.world_size, timeout=timeout)
    group = dist.group.WORLD
    mesh = None
    if any(unit["implementation"] == LOSS_PARALLEL for unit in plan["units"]):
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (args.world_size,))

    with open(args.job / f"rank-{args.rank}.jsonl", "a", encoding="utf-8") as results:
        for unit in plan["units"]:
            keys = [f"unit/{unit['id']}/{rank}" for rank in range(args.world_size)]
            try:
                line = run_unit(unit, args.seed, group, args.rank, args.world_size, mesh)
            except Exception as error:  # A failing implementation is a result, written before anything else.
                lines = traceback.format_exception_only(type(error), error)
                error_line = {"unit": unit["id"], "status": "error", "detail": "".join(lines).strip()[:2000], "time": time.time()}
                results.write(json.dumps(error_line) + "\n")
                results.flush()
                store.set(keys[args.rank], "error")
                if not _peers_left_unit(store, keys):
                    # A peer is still inside a collective of this unit that this rank will never join, so
                    # the rank exits. The parent then stops the job and restarts it after this unit.
                    return EXIT_UNIT_ERROR
            else:
                results.write(json.dumps({"unit": unit["id"], **line}) + "\n")
                results.flush()
                store.set(keys[args.rank], "done")
            dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
