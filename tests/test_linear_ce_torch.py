"""How the PyTorch linear cross-entropy mirror computes: memory per chunk, half precision, gradient paths, chunk sizes.

The conformance cases compare values and gradients with the spec. These tests
pin what those cases cannot see. No tensor with N x V elements is ever formed
when the chunk is smaller than N, and eager passes allocate their chunk
buffers once. A bfloat16 call is the float32 computation rounded once. The
"none" and "mean" reductions take the backward strategies that the mirror's
docstring states, and the chunk size never changes the result.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import losses  # noqa: E402
from backends.torch.linear import linear_cross_entropy  # noqa: E402
from backends.torch.natives import linear_cross_entropy_native  # noqa: E402

IGNORE = -100
# N tokens, hidden size H, vocabulary V. N x V exceeds every other buffer the
# mirror needs (the gradients N x H and V x H, one chunk's logits CHUNK x V),
# so the check can flag any tensor with N x V elements.
N, H, V = 24, 8, 40
CHUNK = 5
MATMULS = {"aten.mm.default", "aten.mm.out", "aten.addmm.default", "aten.addmm.out", "aten.addmm_.default"}


def make_inputs(seed=0, tokens=N, hidden_size=H, vocab_size=V, dtype=torch.float64):
    """Hidden states, weight, bias and targets with a quarter of the targets ignored."""
    generator = np.random.default_rng(seed)
    hidden = torch.tensor(generator.standard_normal((tokens, hidden_size)), dtype=dtype)
    weight = torch.tensor(generator.standard_normal((vocab_size, hidden_size)) / np.sqrt(hidden_size), dtype=dtype)
    bias = torch.tensor(generator.standard_normal(vocab_size) * 0.5, dtype=dtype)
    targets = generator.integers(0, vocab_size, size=tokens)
    targets[generator.random(tokens) < 0.25] = IGNORE
    return hidden, weight, bias, torch.tensor(targets)


def loss_and_gradients(function, hidden, weight, bias, targets, cotangent=None, **options):
    """Return the loss and the gradients of sum(cotangent * loss) for hidden, weight and bias."""
    leaves = [tensor.detach().clone().requires_grad_(True) for tensor in (hidden, weight, bias)]
    loss = function(leaves[0], leaves[1], targets, bias=leaves[2], **options)
    weighted = loss if cotangent is None else loss * cotangent
    gradients = torch.autograd.grad(weighted.sum(), leaves)
    return (loss.detach(), *gradients)


class ShapeRecorder(TorchDispatchMode):
    """Record the op name and the shape of every tensor output of every ATen op run under the mode."""

    def __init__(self):
        super().__init__()
        self.outputs = []
        self.allocations = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        values = result if isinstance(result, (tuple, list)) else (result,)
        # An output with alias information is a view, an in-place result or an out= argument, not new memory.
        fresh = all(output.alias_info is None for output in func._schema.returns)
        for value in values:
            if isinstance(value, torch.Tensor):
                self.outputs.append((str(func), tuple(value.shape)))
                if fresh:
                    self.allocations.append(tuple(value.shape))
        return result

    def logits_sized(self, tokens=N, vocab_size=V):
        """Return the recorded outputs with at least tokens x vocab_size elements."""
        return [(name, shape) for name, shape in self.outputs if int(np.prod(shape)) >= tokens * vocab_size]

    def count(self, names):
        return sum(1 for name, _ in self.outputs if name in names)

    def logits_rows_allocated(self, vocab_size=V):
        """Return the shapes of the new (rows, vocab_size) tensors: logits-like buffers of any number of rows."""
        return [shape for shape in self.allocations if len(shape) == 2 and shape[1] == vocab_size]


def run_recorded(function, with_gradient, reduction, chunk_size=CHUNK):
    """Run function eagerly under a ShapeRecorder, with or without a backward, and return the recorder."""
    hidden, weight, bias, targets = make_inputs(dtype=torch.float32)
    recorder = ShapeRecorder()
    if with_gradient:
        with recorder:
            loss_and_gradients(function, hidden, weight, bias, targets, reduction=reduction, chunk_size=chunk_size)
    else:
        with torch.no_grad(), recorder:
            function(hidden, weight, targets, bias=bias, reduction=reduction, chunk_size=chunk_size)
    return recorder


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
def test_eager_never_forms_full_logits(reduction, with_gradient):
    recorder = run_recorded(linear_cross_entropy, with_gradient, reduction)
    assert recorder.outputs, "the dispatch mode recorded no op"
    assert recorder.logits_sized() == []


@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
def test_eager_shape_check_flags_full_logits(with_gradient):
    native = run_recorded(linear_cross_entropy_native, with_gradient, "mean")
    assert (N, V) in [shape for _, shape in native.logits_sized()]
    one_chunk = run_recorded(linear_cross_entropy, with_gradient, "mean", chunk_size=N)
    assert (N, V) in [shape for _, shape in one_chunk.logits_sized()]


def compiled_graph_shapes(function, with_gradient, reduction, chunk_size=CHUNK):
    """Compile function with AOTAutograd and return the shapes of every node in its forward and backward ATen graphs.

    These are the graphs that the default Inductor backend receives, so a
    tensor absent from them is absent from the compiled code too.
    """
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    shapes = []

    def record(graph_module, example_inputs):
        for node in graph_module.graph.nodes:
            values = node.meta.get("val")
            for value in values if isinstance(values, (tuple, list)) else (values,):
                if isinstance(value, torch.Tensor):
                    shapes.append(tuple(value.shape))
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    compiled = torch.compile(function, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True, dynamic=False)
    hidden, weight, bias, targets = make_inputs(dtype=torch.float32)
    if with_gradient:
        loss_and_gradients(compiled, hidden, weight, bias, targets, reduction=reduction, chunk_size=chunk_size)
    else:
        with torch.no_grad():
            compiled(hidden, weight, targets, bias=bias, reduction=reduction, chunk_size=chunk_size)
    return shapes


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("with_gradient", [False, True], ids=["forward", "forward-backward"])
def test_compiled_never_forms_full_logits(reduction, with_gradient):
    shapes = compiled_graph_shapes(linear_cross_entropy, with_gradient, reduction)
    assert shapes, "the compiled graphs have no tensor node"
    assert [shape for shape in shapes if int(np.prod(shape)) >= N * V] == []


def test_compiled_shape_check_flags_full_logits():
    shapes = compiled_graph_shapes(linear_cross_entropy_native, True, "mean")
    assert (N, V) in shapes


def bfloat16_ulp(values):
    """Return the spacing of bfloat16 numbers at each value (8 significand bits), the smallest normal's spacing at 0."""
    _, exponent = torch.frexp(values.float())
    spacing = torch.ldexp(torch.ones_like(values, dtype=torch.float32), exponent - 8)
    return torch.where(values == 0, torch.finfo(torch.bfloat16).tiny * 2.0**-7, spacing)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bfloat16_is_rounded_float32(reduction):
    hidden, weight, bias, targets = make_inputs(seed=1, dtype=torch.bfloat16)
    options = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-3, "chunk_size": CHUNK}
    cotangent = None
    if reduction == "none":
        cotangent = torch.tensor(np.random.default_rng(2).standard_normal(N), dtype=torch.bfloat16)
    half = loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, **options)
    single = loss_and_gradients(
        linear_cross_entropy,
        hidden.float(),
        weight.float(),
        bias.float(),
        targets,
        None if cotangent is None else cotangent.float(),
        **options,
    )
    for name, half_result, single_result in zip(("loss", "hidden", "weight", "bias"), half, single):
        assert half_result.dtype == torch.bfloat16, name
        rounded = single_result.to(torch.bfloat16)
        error = (half_result.float() - rounded.float()).abs()
        assert bool((error <= bfloat16_ulp(rounded)).all()), f"{name}: max difference {float(error.max())}"


def spec_gradients(hidden, weight, bias, targets, cotangent, **options):
    return losses.linear_cross_entropy_grad(
        hidden.numpy(), weight.numpy(), targets.numpy(), bias=bias.numpy(), cotangent=cotangent, **options
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradient_paths_match_spec(reduction):
    hidden, weight, bias, targets = make_inputs(seed=3)
    options = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-2, "chunk_size": CHUNK}
    if reduction == "none":
        cotangent = np.random.default_rng(4).standard_normal(N)
    else:
        cotangent = np.asarray(0.7)
    loss, *gradients = loss_and_gradients(
        linear_cross_entropy, hidden, weight, bias, targets, torch.tensor(cotangent), **options
    )
    expected_loss = losses.linear_cross_entropy(hidden.numpy(), weight.numpy(), targets.numpy(), bias=bias.numpy(), **options)
    np.testing.assert_allclose(loss.numpy(), expected_loss, rtol=1e-12, atol=1e-12)
    expected = spec_gradients(hidden, weight, bias, targets, cotangent, **options)
    for name, gradient in zip(("hidden", "weight", "bias"), gradients):
        np.testing.assert_allclose(gradient.numpy(), expected[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("reduction", "with_gradient", "forward_matmuls", "backward_matmuls"),
    [
        # Loss only: the logits of each chunk.
        ("mean", False, 1, 0),
        ("none", False, 1, 0),
        # Gradients in the forward pass: logits, G W and G^T hidden per chunk; the backward only scales.
        ("mean", True, 3, 0),
        ("sum", True, 3, 0),
        # Recompute: logits in the forward pass; logits again, G W and G^T hidden in the backward.
        ("none", True, 1, 3),
    ],
)
def test_matmuls_per_chunk(reduction, with_gradient, forward_matmuls, backward_matmuls):
    hidden, weight, bias, targets = make_inputs(seed=5, dtype=torch.float32)
    chunks = -(-N // CHUNK)
    leaves = [tensor.requires_grad_(with_gradient) for tensor in (hidden, weight, bias)]
    forward = ShapeRecorder()
    with torch.set_grad_enabled(with_gradient), forward:
        loss = linear_cross_entropy(leaves[0], leaves[1], targets, bias=leaves[2], reduction=reduction, chunk_size=CHUNK)
    assert forward.count(MATMULS) == forward_matmuls * chunks
    if with_gradient:
        backward = ShapeRecorder()
        with backward:
            torch.autograd.grad(loss.sum(), leaves)
        assert backward.count(MATMULS) == backward_matmuls * chunks


@pytest.mark.parametrize(
    ("reduction", "with_gradient", "forward_buffers", "backward_buffers"),
    [
        # The logits buffer and the exp temporary of the log-normaliser.
        ("mean", False, 2, 0),
        ("mean", True, 2, 0),
        # The backward recomputes the softmax in place in its own logits buffer.
        ("none", True, 2, 1),
    ],
)
def test_eager_allocates_chunk_buffers_once(reduction, with_gradient, forward_buffers, backward_buffers):
    hidden, weight, bias, targets = make_inputs(seed=8, dtype=torch.float32)
    leaves = [tensor.requires_grad_(with_gradient) for tensor in (hidden, weight, bias)]
    forward = ShapeRecorder()
    with torch.set_grad_enabled(with_gradient), forward:
        loss = linear_cross_entropy(leaves[0], leaves[1], targets, bias=leaves[2], reduction=reduction, chunk_size=CHUNK)
    assert forward.logits_rows_allocated() == [(CHUNK, V)] * forward_buffers
    if with_gradient:
        backward = ShapeRecorder()
        with backward:
            torch.autograd.grad(loss.sum(), leaves)
        assert backward.logits_rows_allocated() == [(CHUNK, V)] * backward_buffers


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_nonfinite_ignored_rows_match_spec(reduction, compiled):
    hidden, weight, bias, targets = make_inputs(seed=9)
    ignored = int(np.flatnonzero(targets.numpy() == IGNORE)[0])
    hidden[ignored, 0] = np.inf
    options = {"reduction": reduction, "chunk_size": CHUNK}
    cotangent = np.random.default_rng(10).standard_normal(N) if reduction == "none" else np.asarray(1.0)
    function = linear_cross_entropy
    if compiled:
        torch._dynamo.reset()
        function = torch.compile(linear_cross_entropy, backend="aot_eager", fullgraph=True, dynamic=False)
    loss, *gradients = loss_and_gradients(function, hidden, weight, bias, targets, torch.tensor(cotangent), **options)
    with np.errstate(invalid="ignore"):
        expected_loss = losses.linear_cross_entropy(hidden.numpy(), weight.numpy(), targets.numpy(), bias=bias.numpy(), **options)
        expected = spec_gradients(hidden, weight, bias, targets, cotangent, **options)
    np.testing.assert_allclose(loss.numpy(), expected_loss, rtol=1e-12, atol=1e-12)
    for name, gradient in zip(("hidden", "weight", "bias"), gradients):
        # The spec leaves ignored tokens out of G^T hidden, so no 0 x inf = NaN reaches any gradient.
        assert np.isfinite(expected[name]).all(), name
        np.testing.assert_allclose(gradient.numpy(), expected[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_chunk_size_never_changes_result(reduction):
    hidden, weight, bias, targets = make_inputs(seed=6)
    options = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-3}
    cotangent = torch.tensor(np.random.default_rng(7).standard_normal(N)) if reduction == "none" else None
    baseline = loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, chunk_size=1, **options)
    for chunk_size in (3, N, 4 * N):
        results = loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, chunk_size=chunk_size, **options)
        for name, expected, actual in zip(("loss", "hidden", "weight", "bias"), baseline, results):
            np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-12, atol=1e-14, err_msg=f"{name}, chunk_size={chunk_size}")


def compiled_graph_ops(with_gradient, reduction, chunk_size=CHUNK):
    """Compile linear_cross_entropy with AOTAutograd; return the ops called in its forward graph and in its backward graph."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def recorder(ops):
        def record(graph_module, example_inputs):
            ops.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
            return make_boxed_func(graph_module.forward)

        return record

    forward_ops, backward_ops = [], []
    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=recorder(forward_ops), bw_compiler=recorder(backward_ops))
    compiled = torch.compile(linear_cross_entropy, backend=backend, fullgraph=True, dynamic=False)
    hidden, weight, bias, targets = make_inputs(dtype=torch.float32)
    if with_gradient:
        loss_and_gradients(compiled, hidden, weight, bias, targets, reduction=reduction, chunk_size=chunk_size)
    else:
        with torch.no_grad():
            compiled(hidden, weight, targets, bias=bias, reduction=reduction, chunk_size=chunk_size)
    return forward_ops, backward_ops


LOSSES_OP = "lossparity.linear_cross_entropy_losses.default"
LOSSES_AND_GRADIENTS_OP = "lossparity.linear_cross_entropy_losses_and_gradients.default"
RECOMPUTED_GRADIENTS_OP = "lossparity.linear_cross_entropy_recomputed_gradients.default"


@pytest.mark.parametrize(
    ("reduction", "with_gradient", "forward_op", "backward_op"),
    [
        ("mean", False, LOSSES_OP, None),
        ("none", False, LOSSES_OP, None),
        ("mean", True, LOSSES_AND_GRADIENTS_OP, None),
        ("sum", True, LOSSES_AND_GRADIENTS_OP, None),
        ("none", True, LOSSES_OP, RECOMPUTED_GRADIENTS_OP),
    ],
)
def test_compiled_pass_is_one_custom_op(reduction, with_gradient, forward_op, backward_op):
    # Five chunks, yet one op call per pass: the loop over chunks is not unrolled into the graph.
    forward_ops, backward_ops = compiled_graph_ops(with_gradient, reduction)
    assert forward_ops.count(forward_op) == 1
    assert [op for op in forward_ops if op.startswith("lossparity.")] == [forward_op]
    if backward_op is not None:
        assert [op for op in backward_ops if op.startswith("lossparity.")] == [backward_op]
    assert MATMULS.isdisjoint(forward_ops + backward_ops)


def custom_op_arguments(seed=12):
    """Return float32 hidden, weight, bias, targets with 0 at ignored rows, the counted mask and a random row_scale."""
    hidden, weight, bias, targets = make_inputs(seed=seed, dtype=torch.float32)
    counted = targets != IGNORE
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets))
    row_scale = torch.tensor(np.random.default_rng(seed + 1).standard_normal(N), dtype=torch.float32)
    return hidden, weight, bias, safe_targets, counted, row_scale


def test_custom_ops_pass_opcheck():
    from backends.torch import linear as linear_module

    hidden, weight, bias, targets, counted, row_scale = custom_op_arguments()
    options = (CHUNK, 0.1, 1e-3)
    _, row_max, log_normalizer = linear_module._losses_op(hidden, weight, bias, targets, counted, *options)
    cases = [
        (linear_module._losses_op, (hidden, weight, bias, targets, counted, *options)),
        (linear_module._losses_op, (hidden, weight, None, targets, counted, *options)),
        (linear_module._losses_and_gradients_op, (hidden, weight, bias, targets, counted, row_scale, *options, [True, True, True])),
        (linear_module._losses_and_gradients_op, (hidden, weight, None, targets, counted, row_scale, *options, [False, True, False])),
        (
            linear_module._recomputed_gradients_op,
            (hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, *options, [True, True, True]),
        ),
    ]
    for op, arguments in cases:
        torch.library.opcheck(op, arguments)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inductor_matches_eager(reduction):
    hidden, weight, bias, targets = make_inputs(seed=13)
    options = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-3, "chunk_size": CHUNK}
    cotangent = torch.tensor(np.random.default_rng(14).standard_normal(N)) if reduction == "none" else torch.tensor(0.7)
    expected = loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, cotangent, **options)
    torch._dynamo.reset()
    compiled = torch.compile(linear_cross_entropy, fullgraph=True, dynamic=False)
    actual = loss_and_gradients(compiled, hidden, weight, bias, targets, cotangent, **options)
    for name, expected_result, actual_result in zip(("loss", "hidden", "weight", "bias"), expected, actual):
        np.testing.assert_allclose(actual_result.numpy(), expected_result.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
