"""How the TensorFlow linear cross-entropy mirror computes: no (N, V) tensor, float32 for half inputs, both gradient paths, chunk sizes.

The conformance cases compare values and gradients with the spec. These tests
pin what those cases cannot see. They check the sizes of the tensors the
mirror builds, in the traced graph, in XLA's HLO and in eager mode's
allocator. They check that bfloat16 inputs give the float32 result rounded
once, which matmuls XLA keeps, and that the chunk size does not change the
result.
"""

import math
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import losses  # noqa: E402
from backends.tensorflow.linear import linear_cross_entropy  # noqa: E402
from backends.tensorflow.natives import linear_sparse_softmax_native  # noqa: E402

IGNORE = -100
# Tokens, hidden size, vocabulary size and chunk of the tensor-size tests. A
# chunk of 12 leaves a short last chunk, so 64 rows are padded to 72.
TOKENS, HIDDEN, VOCAB, CHUNK = 64, 8, 50, 12
# The largest tensor the mirror needs: a chunk's logits, the weight, or the padded hidden states.
LARGEST_ALLOWED = max(CHUNK * VOCAB, VOCAB * HIDDEN, math.ceil(TOKENS / CHUNK) * CHUNK * HIDDEN)
HLO_SHAPE = re.compile(r"\b(?:pred|[su](?:8|16|32|64)|f16|bf16|f32|f64)\[([0-9,]*)\]")


def make_inputs(rng, tokens=(10,), hidden_size=5, vocab_size=7, bias=True, ignored=(2, 5)):
    """Return float64 hidden, weight and bias (or None) and int64 targets, with the given flat positions ignored."""
    hidden = rng.standard_normal(tokens + (hidden_size,))
    weight = rng.standard_normal((vocab_size, hidden_size)) * (2.0 / math.sqrt(hidden_size))
    targets = rng.integers(0, vocab_size, size=tokens)
    targets.reshape(-1)[list(ignored)] = IGNORE
    return {
        "hidden": hidden,
        "weight": weight,
        "bias": rng.standard_normal(vocab_size) * 0.5 if bias else None,
        "targets": targets.astype(np.int64),
    }


def to_tensors(inputs, dtype):
    """Convert the float inputs to dtype and the targets to int64 tensors; None stays None."""
    tensors = {}
    for name, array in inputs.items():
        if array is None:
            tensors[name] = None
        elif name == "targets":
            tensors[name] = tf.constant(array)
        else:
            tensors[name] = tf.cast(tf.constant(array), dtype)
    return tensors


def value_and_gradients(function, tensors, options, cotangent, compiled):
    """Return the loss and the gradients of sum(cotangent * loss) for hidden, weight and bias (when given)."""
    float_names = [name for name in ("hidden", "weight", "bias") if tensors[name] is not None]

    def step(float_tensors, targets, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(float_tensors)
            arguments = dict(zip(float_names, float_tensors))
            loss = function(arguments["hidden"], arguments["weight"], targets, bias=arguments.get("bias"), **options)
            weighted = tf.reduce_sum(loss * tf.cast(cotangent, loss.dtype))
        return loss, tape.gradient(weighted, float_tensors)

    if compiled:
        step = tf.function(step, jit_compile=True)
    loss, gradients = step([tensors[name] for name in float_names], tensors["targets"], cotangent)
    return loss, dict(zip(float_names, gradients))


def cotangent_for(rng, tokens, reduction):
    return rng.standard_normal(tokens) if reduction == "none" else np.asarray(1.0)


# No (N, V) tensor -------------------------------------------------------------


def size_test_tensors():
    rng = np.random.default_rng(0)
    inputs = make_inputs(rng, (TOKENS,), HIDDEN, VOCAB, bias=True, ignored=range(0, TOKENS, 7))
    return to_tensors(inputs, tf.float32)


def traced_step(function, options, with_gradient):
    """Return a tf.function computing the loss, and its gradients when with_gradient, of function(hidden, weight, targets, bias=bias)."""

    def step(hidden, weight, targets, bias):
        if not with_gradient:
            return function(hidden, weight, targets, bias=bias, **options)
        float_tensors = [hidden, weight] + ([] if bias is None else [bias])
        with tf.GradientTape() as tape:
            tape.watch(float_tensors)
            loss = function(hidden, weight, targets, bias=bias, **options)
        return loss, tape.gradient(loss, float_tensors)

    return step


def graph_tensor_shapes(graph, root, seen):
    """Yield (op type, op name, shape) for every output in graph and in the functions its ops call.

    Functions are while loops' bodies and conditions. They are looked up with
    FuncGraph._get_function, a private method of TensorFlow 2.21.
    """
    for op in graph.get_operations():
        for output in op.outputs:
            yield op.type, op.name, output.shape
        for attribute in op.node_def.attr.values():
            names = [attribute.func.name] if attribute.HasField("func") else [item.name for item in attribute.list.func]
            for name in names:
                if name and name not in seen:
                    seen.add(name)
                    function = graph._get_function(name) or root._get_function(name)
                    yield from graph_tensor_shapes(function.graph, root, seen)


def oversized_graph_tensors(function, options, with_gradient):
    """Return the tensors in the traced graph with more than LARGEST_ALLOWED elements or an unknown shape, and the functions walked."""
    tensors = size_test_tensors()
    step = tf.function(traced_step(function, options, with_gradient))
    graph = step.get_concrete_function(tensors["hidden"], tensors["weight"], tensors["targets"], tensors["bias"]).graph
    found = []
    seen = set()
    for op_type, name, shape in graph_tensor_shapes(graph, graph, seen):
        # A while loop's condition gets placeholders of unknown shape for the loop variables it does not read.
        if op_type == "Placeholder" and shape.rank is None:
            continue
        if not shape.is_fully_defined() or shape.num_elements() > LARGEST_ALLOWED:
            found.append((name, shape))
    return found, seen


def oversized_hlo_tensors(function, options, with_gradient):
    """Return the shapes in XLA's HLO (before and after optimization) with more than LARGEST_ALLOWED elements."""
    tensors = size_test_tensors()
    step = tf.function(traced_step(function, options, with_gradient), jit_compile=True)
    found = []
    for stage in ("hlo", "optimized_hlo"):
        text = step.experimental_get_compiler_ir(tensors["hidden"], tensors["weight"], tensors["targets"], tensors["bias"])(stage)
        for match in HLO_SHAPE.finditer(text):
            dimensions = [int(size) for size in match.group(1).split(",") if size]
            if math.prod(dimensions) > LARGEST_ALLOWED:
                found.append((stage, match.group(0)))
    return found


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_graph_no_logits_tensor(reduction, with_gradient):
    options = {"reduction": reduction, "chunk_size": CHUNK, "label_smoothing": 0.1, "z_loss": 1e-3}
    found, functions = oversized_graph_tensors(linear_cross_entropy, options, with_gradient)
    assert found == []
    assert any("while_body" in name for name in functions), "the walk did not reach the chunk loop's body"


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
def test_graph_check_flags_native(with_gradient):
    found, _ = oversized_graph_tensors(linear_sparse_softmax_native, {"reduction": "mean"}, with_gradient)
    assert any(shape.as_list() == [TOKENS, VOCAB] for _, shape in found)


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_hlo_no_logits_tensor(reduction, with_gradient):
    options = {"reduction": reduction, "chunk_size": CHUNK, "label_smoothing": 0.1, "z_loss": 1e-3}
    assert oversized_hlo_tensors(linear_cross_entropy, options, with_gradient) == []


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
def test_hlo_check_flags_native(with_gradient):
    found = oversized_hlo_tensors(linear_sparse_softmax_native, {"reduction": "mean"}, with_gradient)
    assert any(shape.endswith(f"[{TOKENS},{VOCAB}]") for _, shape in found)


def eager_peak_bytes(function, options, with_gradient):
    """Return the peak of TensorFlow's CPU allocator during one eager call, above what was allocated before it.

    The vocabulary is large against the chunk, so the float32 logits
    (16 MiB) dwarf everything the mirror needs: a chunk's logits (128 KiB),
    the weight gradient (256 KiB) and the hidden gradient (64 KiB).
    """
    rng = np.random.default_rng(1)
    tokens, hidden_size, vocab_size = 1024, 16, 4096
    tensors = to_tensors(make_inputs(rng, (tokens,), hidden_size, vocab_size, bias=False, ignored=()), tf.float32)
    step = traced_step(function, options, with_gradient)
    with tf.device("/CPU:0"):
        step(tensors["hidden"], tensors["weight"], tensors["targets"], None)  # Load the kernels first.
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        result = step(tensors["hidden"], tensors["weight"], tensors["targets"], None)
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    del result
    return peak - before, tokens * vocab_size * 4


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_eager_peak_memory_below_logits(reduction, with_gradient):
    peak, logits_bytes = eager_peak_bytes(linear_cross_entropy, {"reduction": reduction, "chunk_size": 8}, with_gradient)
    # Measured on CPU with TensorFlow 2.21: about 1.5 MiB, against 16 MiB of logits.
    assert peak < logits_bytes / 4


def test_eager_memory_check_flags_native():
    peak, logits_bytes = eager_peak_bytes(linear_sparse_softmax_native, {"reduction": "mean"}, with_gradient=True)
    assert peak >= logits_bytes


@pytest.mark.parametrize(
    ("reduction", "with_gradient", "expected_matmuls"),
    [("mean", False, 1), ("mean", True, 3), ("sum", True, 3), ("none", False, 1), ("none", True, 4)],
)
def test_xla_matmul_count(reduction, with_gradient, expected_matmuls):
    # "mean" and "sum" compute the gradients in the forward: logits, dh and dW.
    # Without a tape XLA drops the two gradient matmuls. "none" recomputes the
    # logits in the backward, a fourth matmul.
    tensors = size_test_tensors()
    step = tf.function(traced_step(linear_cross_entropy, {"reduction": reduction, "chunk_size": CHUNK}, with_gradient), jit_compile=True)
    text = step.experimental_get_compiler_ir(tensors["hidden"], tensors["weight"], tensors["targets"], tensors["bias"])("optimized_hlo")
    assert len(re.findall(r"= \S+ dot\(", text)) == expected_matmuls


# Half precision ---------------------------------------------------------------


def bfloat16_ulps_apart(actual, expected):
    """Return the distance in bfloat16 ulps between two bfloat16 tensors, element by element (0 when equal)."""

    def ordered(tensor):
        bits = tf.bitcast(tensor, tf.uint16).numpy().astype(np.int64)
        return np.where(bits < 0x8000, bits, 0x8000 - bits)

    return np.abs(ordered(actual) - ordered(expected))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bfloat16_is_rounded_float32(reduction, compiled):
    rng = np.random.default_rng(2)
    inputs = make_inputs(rng, (11,), 6, 9)
    options = {"reduction": reduction, "chunk_size": 4, "label_smoothing": 0.1, "z_loss": 1e-2}
    cotangent = cotangent_for(rng, (11,), reduction)
    half = to_tensors(inputs, tf.bfloat16)
    widened = {name: None if tensor is None or name == "targets" else tf.cast(tensor, tf.float32) for name, tensor in half.items()}
    widened["targets"] = half["targets"]

    loss, gradients = value_and_gradients(linear_cross_entropy, half, options, tf.constant(cotangent, tf.bfloat16), compiled)
    # The same bfloat16 cotangent, widened, so both runs see one set of numbers.
    wide_cotangent = tf.cast(tf.constant(cotangent, tf.bfloat16), tf.float32)
    wide_loss, wide_gradients = value_and_gradients(linear_cross_entropy, widened, options, wide_cotangent, compiled)

    assert loss.dtype == tf.bfloat16
    assert bfloat16_ulps_apart(loss, tf.cast(wide_loss, tf.bfloat16)).max() <= 1
    for name in ("hidden", "weight", "bias"):
        assert gradients[name].dtype == tf.bfloat16, name
        assert bfloat16_ulps_apart(gradients[name], tf.cast(wide_gradients[name], tf.bfloat16)).max() <= 1, name


# Gradient paths ---------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradients_match_spec(reduction, compiled):
    # "mean" and "sum" take the gradients computed in the forward; "none" recomputes each chunk in the backward.
    rng = np.random.default_rng(3)
    inputs = make_inputs(rng, (2, 5), 4, 6, ignored=(1, 6))
    options = {"reduction": reduction, "chunk_size": 3, "label_smoothing": 0.2, "z_loss": 1e-2}
    cotangent = cotangent_for(rng, (2, 5), reduction)

    loss, gradients = value_and_gradients(linear_cross_entropy, to_tensors(inputs, tf.float64), options, tf.constant(cotangent), compiled)
    expected = losses.linear_cross_entropy_grad(**inputs, **options, cotangent=cotangent)

    np.testing.assert_allclose(loss.numpy(), losses.linear_cross_entropy(**inputs, **options), rtol=1e-12, atol=1e-14)
    for name in ("hidden", "weight", "bias"):
        np.testing.assert_allclose(gradients[name].numpy(), expected[name], rtol=1e-10, atol=1e-14, err_msg=name)


# Chunk sizes ------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_chunk_sizes_agree(reduction):
    rng = np.random.default_rng(4)
    tokens = 10
    inputs = make_inputs(rng, (tokens,), 5, 7)
    tensors = to_tensors(inputs, tf.float64)
    cotangent = tf.constant(cotangent_for(rng, (tokens,), reduction))

    results = {}
    for chunk_size in (1, 3, tokens, tokens + 7, None):
        options = {"reduction": reduction, "chunk_size": chunk_size, "label_smoothing": 0.1, "z_loss": 1e-3}
        results[chunk_size] = value_and_gradients(linear_cross_entropy, tensors, options, cotangent, compiled=False)

    whole_loss, whole_gradients = results[tokens]
    for chunk_size, (loss, gradients) in results.items():
        np.testing.assert_allclose(loss.numpy(), whole_loss.numpy(), rtol=1e-13, atol=1e-15, err_msg=f"chunk_size={chunk_size}")
        for name, gradient in gradients.items():
            np.testing.assert_allclose(
                gradient.numpy(), whole_gradients[name].numpy(), rtol=1e-12, atol=1e-15, err_msg=f"{name}, chunk_size={chunk_size}"
            )


# Memory floor and the eager in-place weight gradient ---------------------------


def test_eager_peak_near_gradient_floor(monkeypatch):
    # The weight gradient (16384 x 64, 4 MiB) dwarfs a chunk's logits (512 KiB),
    # and 1024-row blocks make each block's product 256 KiB. Adding whole
    # (V, H) products would hold three (V, H) buffers at once, 3x the floor.
    monkeypatch.setattr("backends.tensorflow.linear.WEIGHT_GRADIENT_BLOCK_ELEMENTS", 1024 * 64)
    rng = np.random.default_rng(5)
    tokens, hidden_size, vocab_size = 64, 64, 16384
    tensors = to_tensors(make_inputs(rng, (tokens,), hidden_size, vocab_size, bias=False, ignored=()), tf.float32)
    step = traced_step(linear_cross_entropy, {"reduction": "mean", "chunk_size": 8}, with_gradient=True)
    with tf.device("/CPU:0"):
        step(tensors["hidden"], tensors["weight"], tensors["targets"], None)
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        result = step(tensors["hidden"], tensors["weight"], tensors["targets"], None)
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    del result
    floor = (tokens + vocab_size) * hidden_size * 4
    assert peak < 1.5 * floor


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_cotangent_scales_gradients(reduction):
    # A cotangent of 1 returns the saved gradients as they are, any other one scales them.
    rng = np.random.default_rng(6)
    inputs = make_inputs(rng, (12,), 4, 9, ignored=(0, 7))
    options = {"reduction": reduction, "chunk_size": 5, "label_smoothing": 0.1, "z_loss": 1e-2}
    _, gradients = value_and_gradients(linear_cross_entropy, to_tensors(inputs, tf.float64), options, tf.constant(-2.5, tf.float64), False)
    expected = losses.linear_cross_entropy_grad(**inputs, **options, cotangent=np.asarray(-2.5))
    for name in ("hidden", "weight", "bias"):
        np.testing.assert_allclose(gradients[name].numpy(), expected[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_persistent_tape_gradients_repeat():
    # The eager weight gradient is accumulated in place: asking a persistent
    # tape twice must return the same values, not a buffer added to again.
    rng = np.random.default_rng(7)
    tensors = to_tensors(make_inputs(rng, (10,), 4, 6), tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([tensors["hidden"], tensors["weight"], tensors["bias"]])
        loss = linear_cross_entropy(tensors["hidden"], tensors["weight"], tensors["targets"], bias=tensors["bias"], chunk_size=3) * 3.0
    first = tape.gradient(loss, [tensors["hidden"], tensors["weight"], tensors["bias"]])
    second = tape.gradient(loss, [tensors["hidden"], tensors["weight"], tensors["bias"]])
    del tape
    for name, first_gradient, second_gradient in zip(("hidden", "weight", "bias"), first, second):
        np.testing.assert_array_equal(first_gradient.numpy(), second_gradient.numpy(), err_msg=name)
