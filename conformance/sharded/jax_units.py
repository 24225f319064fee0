"""The JAX implementations of the sharded checks, run by jax_worker once jax has its CPU devices.

Padding columns (or weight rows) that make V divide by the world size are
filled with PAD_VALUE, a large finite logit, so padding that leaked into the
softmax would change the value: the mirror must mask it whatever it holds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from backends.jax.vocab_parallel import padded_vocab_size, vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

from .cases import MIRROR, OPTAX_LINEAR_NAMED, OPTAX_NAMED, case_named, prepare

JAX_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16}
PAD_VALUE = 30.0


def _pad(array: np.ndarray, axis: int, width: int) -> np.ndarray:
    missing = width - array.shape[axis]
    if missing == 0:
        return array
    pad_shape = list(array.shape)
    pad_shape[axis] = missing
    return np.concatenate([array, np.full(pad_shape, PAD_VALUE)], axis=axis)


def _reduce(per_example, reduction):
    """Apply the spec's reduction to optax's per-example losses (adapter glue)."""
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "mean":
        return jnp.mean(per_example)
    return per_example


def _run(step, arguments, differentiable: tuple[str, ...], cotangent) -> dict:
    """Compile step once, run it, and return the JSON line fields with the compiled HLO text."""

    def value_and_vjp(arguments, cotangent):
        primals = {name: arguments[name] for name in differentiable}

        def loss(primals):
            return step({**arguments, **primals})

        value, vjp = jax.vjp(loss, primals)
        (gradients,) = vjp(cotangent.astype(value.dtype))
        return value, gradients

    compiled = jax.jit(value_and_vjp).lower(arguments, cotangent).compile()
    value, gradients = compiled(arguments, cotangent)
    return {
        "status": "ok",
        "value": np.asarray(value, dtype=np.float64).tolist(),
        "gradients": {name: np.asarray(gradient, dtype=np.float64).tolist() for name, gradient in gradients.items()},
        "hlo": compiled.as_text(),
    }


def run_unit(unit: dict, seed: int, mesh, world_size: int) -> dict:
    case = case_named(unit["case"])
    prepared = prepare(case, unit["dtype"], seed)
    dtype = JAX_DTYPES[unit["dtype"]]
    inputs, options = prepared.inputs, prepared.options
    reduction = options.get("reduction", "mean")
    cotangent = jnp.asarray(prepared.cotangent, dtype=jnp.float64)
    replicated = NamedSharding(mesh, P())

    def put(array, spec, as_dtype=dtype):
        return None if array is None else jax.device_put(jnp.asarray(array, dtype=as_dtype), NamedSharding(mesh, spec))

    targets = put(inputs["targets"], P(), jnp.int32)
    implementation = unit["implementation"]
    if case.loss == "cross_entropy":
        vocab = inputs["logits"].shape[1]
        if implementation == MIRROR:
            arguments = {
                "logits": put(_pad(inputs["logits"], 1, padded_vocab_size(vocab, world_size)), P(None, "v")),
                "targets": targets,
                "weight": put(inputs["weight"], P()),
            }

            def step(a):
                return vocab_parallel_cross_entropy(
                    a["logits"], a["targets"], mesh=mesh, axis_name="v", vocab_size=vocab, weight=a["weight"], **options
                )

        elif implementation == OPTAX_NAMED:
            arguments = {"logits": put(inputs["logits"], P(None, "v")), "targets": targets}

            def step(a):
                return _reduce(optax.softmax_cross_entropy_with_integer_labels(a["logits"], a["targets"]), reduction)

        else:
            raise ValueError(f"implementation {implementation!r} for cross_entropy not found in the JAX sharded worker")
        return _run(step, arguments, ("logits",), jax.device_put(cotangent, replicated))

    vocab = inputs["weight"].shape[0]
    has_bias = inputs["bias"] is not None
    differentiable = ("hidden", "weight", "bias") if has_bias else ("hidden", "weight")
    if implementation == MIRROR:
        padded = padded_vocab_size(vocab, world_size)
        arguments = {
            "hidden": put(inputs["hidden"], P()),
            "weight": put(_pad(inputs["weight"], 0, padded), P("v", None)),
            "bias": put(None if not has_bias else _pad(inputs["bias"], 0, padded), P("v")),
            "targets": targets,
        }

        def step(a):
            return vocab_parallel_linear_cross_entropy(
                a["hidden"], a["weight"], a["targets"], mesh=mesh, axis_name="v", vocab_size=vocab, bias=a["bias"], **options
            )

    elif implementation == OPTAX_LINEAR_NAMED:
        arguments = {
            "hidden": put(inputs["hidden"], P()),
            "weight": put(inputs["weight"], P("v", None)),
            "bias": put(inputs["bias"], P("v")),
            "targets": targets,
        }

        def step(a):
            logits = jnp.matmul(a["hidden"], a["weight"].T)
            if a["bias"] is not None:
                logits = logits + a["bias"]
            return _reduce(optax.softmax_cross_entropy_with_integer_labels(logits, a["targets"]), reduction)

    else:
        raise ValueError(f"implementation {implementation!r} for linear_cross_entropy not found in the JAX sharded worker")
    return _run(step, arguments, differentiable, jax.device_put(cotangent, replicated))
