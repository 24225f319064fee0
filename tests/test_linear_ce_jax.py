"""The JAX linear cross-entropy mirror: no (N, V) array, float32 compute for bfloat16, both gradient strategies, chunk sizes.

The conformance cases compare values and gradients with the float64 spec.
These tests pin how the mirror computes. With chunk_size < N no array of
N x V elements appears in the traced program, in the compiled HLO or among
the residuals that an eager jax.vjp keeps, and the same checks flag the
unchunked native. A bfloat16 call matches the float32 mirror on the same
rounded inputs to one bfloat16 ulp. The "mean" path forms the gradients in the
forward and the "none" path recomputes the logits in the backward, and both
match the spec. Chunk sizes 1, 3, N and more than N give one result.
"""

import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from backends.jax import runtime  # noqa: E402,F401  (64-bit mode, as the harness runs it)

import jax.extend  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402

import losses  # noqa: E402
import backends.jax.linear as linear_module  # noqa: E402
from backends.jax.linear import linear_cross_entropy  # noqa: E402
from backends.jax.natives import linear_integer_labels_native  # noqa: E402

IGNORE = -100
# 48 tokens, hidden size 8, 40 classes and chunks of 8 tokens. One chunk's
# logits are a sixth of N x V, and weight (V x H) is smaller than N x V. Any
# array of N x V elements or more is therefore the whole logits or as large.
TOKENS, HIDDEN, VOCAB, CHUNK = 48, 8, 40, 8
ALL_OPTIONS = {"label_smoothing": 0.1, "z_loss": 1e-2}


def make_inputs(dtype=np.float32, tokens=TOKENS, hidden_size=HIDDEN, vocab_size=VOCAB, seed=0, ignored=0.2, logit_scale=2.0):
    """Return hidden (tokens, H), weight (V, H), bias (V,) as NumPy arrays in dtype, and int64 targets with some ignored.

    The logits hidden @ weight.T have a standard deviation of about logit_scale.
    """
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((tokens, hidden_size)).astype(dtype)
    weight = (rng.standard_normal((vocab_size, hidden_size)) * (logit_scale / np.sqrt(hidden_size))).astype(dtype)
    bias = (rng.standard_normal(vocab_size) * 0.5).astype(dtype)
    targets = rng.integers(0, vocab_size, size=tokens)
    targets = np.where(rng.random(tokens) < ignored, IGNORE, targets).astype(np.int64)
    return hidden, weight, bias, targets


def summed_loss(function, targets, **options):
    """Return f(hidden, weight, bias) = sum of the loss, so one jax.grad covers every reduction."""

    def loss(hidden, weight, bias):
        return jnp.sum(function(hidden, weight, jnp.asarray(targets), bias=bias, **options))

    return loss


# Shape checks ---------------------------------------------------------------


def nested_jaxprs(params):
    """Yield the jaxprs in an equation's parameters (scan bodies, custom_vjp rules, jit calls)."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def equations(jaxpr):
    """Yield every equation of jaxpr and of the jaxprs nested in it."""
    for equation in jaxpr.eqns:
        yield equation
        for inner in nested_jaxprs(equation.params):
            yield from equations(inner)


def large_jaxpr_outputs(function, *args, limit):
    """Return (primitive, shape) for every traced value with at least limit elements."""
    closed = jax.make_jaxpr(function)(*args)
    return [
        (equation.primitive.name, tuple(variable.aval.shape))
        for equation in equations(closed.jaxpr)
        for variable in equation.outvars
        if getattr(variable.aval, "size", 0) >= limit
    ]


def large_hlo_shapes(function, *args, limit):
    """Return the array shapes in the optimised HLO of jax.jit(function) that have at least limit elements."""
    text = jax.jit(function).lower(*args).compile().as_text()
    shapes = set()
    for dimensions in re.findall(r"\b(?:pred|[fsu]\d+|bf16)\[([0-9,]*)\]", text):
        shape = tuple(int(size) for size in dimensions.split(",") if size)
        if int(np.prod(shape)) >= limit:
            shapes.add(shape)
    return sorted(shapes)


def mirror(**options):
    return linear_cross_entropy, {"chunk_size": CHUNK, **ALL_OPTIONS, **options}


def native(**options):
    return linear_integer_labels_native, {"reduction": options.get("reduction", "mean")}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("differentiate", [False, True], ids=["forward", "value-and-grad"])
def test_traced_program_has_no_logits(reduction, differentiate):
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs())
    function, options = mirror(reduction=reduction)
    loss = summed_loss(function, targets, **options)
    if differentiate:
        loss = jax.value_and_grad(loss, argnums=(0, 1, 2))

    assert large_jaxpr_outputs(loss, hidden, weight, bias, limit=TOKENS * VOCAB) == []
    assert large_hlo_shapes(loss, hidden, weight, bias, limit=TOKENS * VOCAB) == []


@pytest.mark.parametrize("differentiate", [False, True], ids=["forward", "value-and-grad"])
def test_shape_checks_flag_native(differentiate):
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs(ignored=0.0))
    function, options = native()
    loss = summed_loss(function, targets, **options)
    if differentiate:
        loss = jax.value_and_grad(loss, argnums=(0, 1, 2))

    assert (TOKENS, VOCAB) in [shape for _, shape in large_jaxpr_outputs(loss, hidden, weight, bias, limit=TOKENS * VOCAB)]
    assert (TOKENS, VOCAB) in large_hlo_shapes(loss, hidden, weight, bias, limit=TOKENS * VOCAB)


def new_large_live_arrays(function, options, inputs, limit):
    """Run jax.vjp eagerly and return the shapes of arrays it left alive (its residuals) with at least limit elements."""
    hidden, weight, bias, targets = (jnp.asarray(array) for array in inputs)
    before = {id(array) for array in jax.live_arrays()}
    value, pullback = jax.vjp(summed_loss(function, targets, **options), hidden, weight, bias)
    shapes = [tuple(array.shape) for array in jax.live_arrays() if id(array) not in before and array.size >= limit]
    gradients = pullback(jnp.ones_like(value))
    assert gradients[0].shape == hidden.shape
    return shapes


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_eager_residuals_have_no_logits(reduction):
    function, options = mirror(reduction=reduction)

    assert new_large_live_arrays(function, options, make_inputs(), limit=TOKENS * VOCAB) == []


def test_eager_residual_check_flags_native():
    function, options = native()

    assert (TOKENS, VOCAB) in new_large_live_arrays(function, options, make_inputs(ignored=0.0), limit=TOKENS * VOCAB)


def test_compiled_temporaries_smaller_than_logits():
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs())
    loss = jax.value_and_grad(summed_loss(linear_cross_entropy, targets, chunk_size=CHUNK, **ALL_OPTIONS), argnums=(0, 1, 2))
    statistics = jax.jit(loss).lower(hidden, weight, bias).compile().memory_analysis()
    if statistics is None:
        pytest.skip(f"JAX {jax.__version__} reports no memory analysis on {jax.devices()[0].platform}")

    assert statistics.temp_size_in_bytes < TOKENS * VOCAB * 4


@pytest.mark.parametrize(
    ("reduction", "differentiate", "matmuls"),
    [("mean", False, 1), ("mean", True, 3), ("sum", True, 3), ("none", False, 1), ("none", True, 4)],
)
def test_matmuls_per_chunk(reduction, differentiate, matmuls):
    # Forward only: the logits. "mean" and "sum": logits, G W and G^T X in one
    # pass. "none": the logits in the forward, then logits, G W and G^T X again.
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs())
    loss = summed_loss(linear_cross_entropy, targets, chunk_size=CHUNK, reduction=reduction)
    if differentiate:
        loss = jax.value_and_grad(loss, argnums=(0, 1, 2))
    closed = jax.make_jaxpr(loss)(hidden, weight, bias)

    assert sum(equation.primitive.name == "dot_general" for equation in equations(closed.jaxpr)) == matmuls


# Half precision -------------------------------------------------------------


class FrozenOptions(dict):
    """A dict of options that jax.jit accepts as a static argument."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


def value_and_gradients(function, hidden, weight, bias, targets, cotangent, options):
    value, pullback = jax.vjp(
        lambda h, w, b: function(h, w, jnp.asarray(targets), bias=b, **options), jnp.asarray(hidden), jnp.asarray(weight), jnp.asarray(bias)
    )
    gradients = pullback(jnp.asarray(cotangent, value.dtype))
    return (value, *gradients)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_bfloat16_matches_rounded_float32(reduction, compiled):
    # Logits of standard deviation 12 are spaced 0.0625 in bfloat16 between 8
    # and 16. A mirror that computes in bfloat16 then misses the rounded float32
    # loss by 2 bfloat16 ulp (measured with JAX 0.10.2 on CPU).
    hidden, weight, bias, targets = (
        array.astype(ml_dtypes.bfloat16) if array.dtype.kind == "f" else array
        for array in make_inputs(np.float64, logit_scale=12.0)
    )
    options = {"chunk_size": 5, "reduction": reduction, **ALL_OPTIONS}
    shape = () if reduction != "none" else targets.shape
    cotangent = np.random.default_rng(1).standard_normal(shape).astype(ml_dtypes.bfloat16)

    def run(dtype):
        call = jax.jit(value_and_gradients, static_argnums=(0, 6)) if compiled else value_and_gradients
        floats = (hidden.astype(dtype), weight.astype(dtype), bias.astype(dtype))
        return call(linear_cross_entropy, *floats, targets, cotangent.astype(dtype), FrozenOptions(options))

    half = run(ml_dtypes.bfloat16)
    single = run(np.float32)
    for name, got, reference in zip(("value", "hidden", "weight", "bias"), half, single):
        assert got.dtype == jnp.bfloat16, name
        rounded = np.asarray(reference).astype(ml_dtypes.bfloat16)
        ulp = np.abs(np.spacing(rounded)).astype(np.float64)
        error = np.abs(np.asarray(got).astype(np.float64) - rounded.astype(np.float64))
        assert np.all(error <= ulp), f"{name}: worst error {np.max(error / ulp)} bfloat16 ulp"


# Gradient strategies against the spec ---------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_gradients_match_spec(reduction, compiled):
    # "mean" and "sum" return the gradients formed in the forward times the
    # cotangent. "none" recomputes the logits in the backward.
    hidden, weight, bias, targets = make_inputs(np.float64, tokens=11)
    options = {"chunk_size": 4, "reduction": reduction, **ALL_OPTIONS}
    cotangent = np.random.default_rng(2).standard_normal(() if reduction != "none" else targets.shape)
    if reduction != "none":
        cotangent = np.asarray(1.75)
    call = value_and_gradients
    if compiled:
        call = jax.jit(value_and_gradients, static_argnums=(0, 6))
    value, *gradients = call(linear_cross_entropy, hidden, weight, bias, targets, cotangent, FrozenOptions(options))

    expected_value = losses.linear_cross_entropy(hidden, weight, targets, bias=bias, **options)
    expected = losses.linear_cross_entropy_grad(hidden, weight, targets, bias=bias, cotangent=cotangent, **options)
    np.testing.assert_allclose(np.asarray(value), expected_value, rtol=1e-12, atol=1e-12)
    for name, gradient in zip(("hidden", "weight", "bias"), gradients):
        np.testing.assert_allclose(np.asarray(gradient), expected[name], rtol=1e-11, atol=1e-12, err_msg=name)


def test_all_ignored_mean_zero_gradient():
    hidden, weight, bias, _ = make_inputs(np.float64, tokens=6)
    targets = np.full(6, IGNORE, dtype=np.int64)
    value, *gradients = value_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, 1.0, {"chunk_size": 4})

    assert float(value) == 0.0
    for gradient in gradients:
        assert not np.any(np.asarray(gradient))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_nonfinite_ignored_hidden_left_out(reduction):
    # 0 * inf in G^T X would put NaN in every weight row unless the ignored
    # rows of hidden are zeroed before the matmuls.
    hidden, weight, bias, targets = make_inputs(np.float64, tokens=11)
    targets[[2, 7]] = IGNORE
    hidden[2] = np.inf
    hidden[7, 0] = np.nan
    cotangent = np.ones(() if reduction != "none" else targets.shape)
    value, *gradients = value_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, {"chunk_size": 4, "reduction": reduction})

    assert np.all(np.isfinite(np.asarray(value)))
    for name, gradient in zip(("hidden", "weight", "bias"), gradients):
        assert np.all(np.isfinite(np.asarray(gradient))), name
    assert not np.any(np.asarray(gradients[0])[[2, 7]])


def test_eager_pullback_runs_once():
    # The eager "mean" backward scales the saved gradients in their own
    # buffers, so the pullback's residuals are deleted after the first call.
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs())
    value, pullback = jax.vjp(summed_loss(linear_cross_entropy, targets, chunk_size=CHUNK), hidden, weight, bias)
    first = pullback(jnp.ones_like(value))

    assert all(np.all(np.isfinite(np.asarray(gradient))) for gradient in first)
    with pytest.raises(RuntimeError, match="pullback was called a second time"):
        pullback(jnp.ones_like(value))


def test_eager_backward_reuses_residual_buffers():
    # A plain cotangent * gradient would hold a second copy of the hidden and
    # weight gradients. The donated product lands in the residuals' buffers.
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs())
    value, pullback = jax.vjp(summed_loss(linear_cross_entropy, targets, chunk_size=CHUNK), hidden, weight, bias)
    residual_pointers = {
        array.unsafe_buffer_pointer() for array in jax.live_arrays() if array.shape in (hidden.shape, weight.shape) and array.dtype == jnp.float32
    }
    gradients = pullback(jnp.ones_like(value))

    assert gradients[0].unsafe_buffer_pointer() in residual_pointers
    assert gradients[1].unsafe_buffer_pointer() in residual_pointers


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_vocabulary_blocks_match_spec(reduction, compiled, monkeypatch):
    # Blocks of 16 rows split V = 43 into two full blocks and a remainder of
    # 11 rows. V = 43 appears in no other test, so the jitted chunk loops are
    # traced again with the patched block size.
    monkeypatch.setattr(linear_module, "VOCAB_BLOCK", 16)
    hidden, weight, bias, targets = make_inputs(np.float64, tokens=11, vocab_size=43)
    options = {"chunk_size": 4, "reduction": reduction, **ALL_OPTIONS}
    cotangent = np.asarray(1.75) if reduction != "none" else np.random.default_rng(4).standard_normal(targets.shape)
    call = jax.jit(value_and_gradients, static_argnums=(0, 6)) if compiled else value_and_gradients
    value, *gradients = call(linear_cross_entropy, hidden, weight, bias, targets, cotangent, FrozenOptions(options))

    expected_value = losses.linear_cross_entropy(hidden, weight, targets, bias=bias, **options)
    expected = losses.linear_cross_entropy_grad(hidden, weight, targets, bias=bias, cotangent=cotangent, **options)
    np.testing.assert_allclose(np.asarray(value), expected_value, rtol=1e-12, atol=1e-12)
    for name, gradient in zip(("hidden", "weight", "bias"), gradients):
        np.testing.assert_allclose(np.asarray(gradient), expected[name], rtol=1e-11, atol=1e-12, err_msg=name)


def test_weight_gradient_temporary_is_one_block(monkeypatch):
    # Without the blocks, the compiled call keeps G^T X, a second (V, H)
    # array, next to the accumulated weight gradient. The temporaries then
    # exceed V H elements; with blocks of 64 of the 512 rows they stay below.
    monkeypatch.setattr(linear_module, "VOCAB_BLOCK", 64)
    tokens, hidden_size, vocab_size = 64, 32, 512
    hidden, weight, _, targets = (jnp.asarray(array) for array in make_inputs(tokens=tokens, hidden_size=hidden_size, vocab_size=vocab_size, ignored=0.0))
    loss = jax.value_and_grad(lambda h, w: linear_cross_entropy(h, w, targets, chunk_size=8), argnums=(0, 1))
    statistics = jax.jit(loss).lower(hidden, weight).compile().memory_analysis()
    if statistics is None:
        pytest.skip(f"JAX {jax.__version__} reports no memory analysis on {jax.devices()[0].platform}")

    assert statistics.temp_size_in_bytes < vocab_size * hidden_size * 4


# Chunk sizes ----------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_chunk_sizes_agree(reduction):
    tokens = 10
    hidden, weight, bias, targets = make_inputs(np.float64, tokens=tokens)
    cotangent = np.random.default_rng(3).standard_normal(() if reduction != "none" else targets.shape)
    results = {}
    for chunk_size in (1, 3, tokens, tokens + 7):
        options = {"chunk_size": chunk_size, "reduction": reduction, **ALL_OPTIONS}
        results[chunk_size] = value_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, options)

    for chunk_size in (3, tokens, tokens + 7):
        for name, got, reference in zip(("value", "hidden", "weight", "bias"), results[chunk_size], results[1]):
            np.testing.assert_allclose(np.asarray(got), np.asarray(reference), rtol=1e-12, atol=1e-13, err_msg=f"chunk {chunk_size} {name}")


# Class-id validation --------------------------------------------------------


def test_class_ids_checked_eagerly_only():
    hidden, weight, bias, targets = (jnp.asarray(array) for array in make_inputs(tokens=4, ignored=0.0))
    bad_targets = targets.at[2].set(VOCAB)

    with pytest.raises(ValueError, match=f"targets contains class id {VOCAB}"):
        linear_cross_entropy(hidden, weight, bad_targets, bias=bias)
    # Under jit the ids are tracers, so no value check runs and the call completes.
    traced = jax.jit(lambda h, w, t: linear_cross_entropy(h, w, t))(hidden, weight, bad_targets)
    assert traced.shape == ()
