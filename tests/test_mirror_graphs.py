"""How the cross-entropy mirrors compute: gradient precision at a certain target, compiled rank-1 logits, logits-sized buffers.

The conformance cases compare values and gradients with the spec. These tests
pin properties that those cases reach only by chance. A row whose target
probability rounds to 1 in float32 must keep the small z-loss term of its
gradient, which autodiff of lse(z) - z_y loses. torch.compile must capture a
single rank-1 row with class weights. One forward and backward must allocate
as few (N, C) buffers as the mirrors' docstrings state. Expected values come
from ``math`` in float64.
"""

import math

import numpy as np
import pytest

Z_LOSS = 1e-4
# Each row's target logit is 0.5 and the others are -30, so the target
# probability 1 / (1 + 2 e^-30.5) rounds to 1 in float32, and the gradient at
# the target is 2 z_loss lse p_y - (1 - p_y) = 1e-4 up to 1e-13.
CERTAIN_LOGITS = np.array([[0.5, -30.0, -30.0], [-30.0, -30.0, 0.5]], dtype=np.float32)
CERTAIN_TARGETS = np.array([0, 2], dtype=np.int64)
# float32 rounding of exp and of the products is a few ulp. Autodiff of
# lse(z) - z_y forms (1 + 1e-4) p_y - 1 at the target instead, which rounds
# 1 + 1e-4 to float32 and is off by 1.7e-4 relative.
CERTAIN_RTOL = 1e-5


def certain_gradient():
    """Return the gradient of the summed loss -log p_y + z_loss lse^2 for CERTAIN_LOGITS, in float64."""
    gradient = np.zeros(CERTAIN_LOGITS.shape)
    for row, target in enumerate(CERTAIN_TARGETS):
        logits = [float(value) for value in CERTAIN_LOGITS[row]]
        total = sum(math.exp(value) for value in logits)
        lse = math.log(total)
        for column, value in enumerate(logits):
            probability = math.exp(value) / total
            gradient[row, column] = (1.0 + 2.0 * Z_LOSS * lse) * probability - (1.0 if column == target else 0.0)
    return gradient


def torch_gradient(compiled):
    torch = pytest.importorskip("torch")
    from backends.torch.classification import cross_entropy

    function = torch.compile(cross_entropy, fullgraph=True) if compiled else cross_entropy
    logits = torch.tensor(CERTAIN_LOGITS, requires_grad=True)
    loss = function(logits, torch.tensor(CERTAIN_TARGETS), z_loss=Z_LOSS, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, logits)
    return gradient.double().numpy()


def jax_gradient(compiled):
    pytest.importorskip("jax")
    from backends.jax import runtime  # noqa: F401  (64-bit mode, as the harness runs it)

    import jax

    from backends.jax.classification import cross_entropy

    def loss(logits):
        return cross_entropy(logits, jax.numpy.asarray(CERTAIN_TARGETS), z_loss=Z_LOSS, reduction="sum")

    gradient_function = jax.jit(jax.grad(loss)) if compiled else jax.grad(loss)
    return np.asarray(gradient_function(jax.numpy.asarray(CERTAIN_LOGITS)), dtype=np.float64)


def tensorflow_gradient(compiled):
    tf = pytest.importorskip("tensorflow")
    from backends.tensorflow.classification import cross_entropy

    def step(logits, targets):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = cross_entropy(logits, targets, z_loss=Z_LOSS, reduction="sum")
        return tape.gradient(loss, logits)

    if compiled:
        step = tf.function(step, jit_compile=True)
    return step(tf.constant(CERTAIN_LOGITS), tf.constant(CERTAIN_TARGETS)).numpy().astype(np.float64)


GRADIENTS = {"torch": torch_gradient, "jax": jax_gradient, "tensorflow": tensorflow_gradient}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("backend", sorted(GRADIENTS))
def test_z_loss_gradient_certain_target(backend, compiled):
    expected = certain_gradient()
    actual = GRADIENTS[backend](compiled)

    targets = (np.arange(2), CERTAIN_TARGETS)
    np.testing.assert_allclose(actual[targets], expected[targets], rtol=CERTAIN_RTOL, atol=0)
    np.testing.assert_allclose(actual, expected, rtol=CERTAIN_RTOL, atol=0)


def test_torch_compiled_rank1_weighted_row():
    torch = pytest.importorskip("torch")
    from backends.torch.classification import cross_entropy

    logits = [0.3, -1.2, 2.0, 0.7]
    weight = [0.5, 2.0, 1.5, 0.25]
    target, smoothing = 2, 0.1
    lse = math.log(sum(math.exp(value) for value in logits))
    log_probs = [value - lse for value in logits]
    # The weighted mean of one row divides by w_y.
    smoothed = -(1 - smoothing) * weight[target] * log_probs[target]
    smoothed -= smoothing / len(logits) * sum(w * log_p for w, log_p in zip(weight, log_probs))
    expected = smoothed / weight[target]

    compiled = torch.compile(cross_entropy, fullgraph=True)
    value = compiled(
        torch.tensor(logits, dtype=torch.float64),
        torch.tensor(target),
        weight=torch.tensor(weight, dtype=torch.float64),
        label_smoothing=smoothing,
    )
    assert value.shape == ()
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_torch_eager_one_logits_buffer():
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from backends.torch.classification import causal_lm_cross_entropy, cross_entropy

    class LogitsSizedOutputs(TorchDispatchMode):
        """Keep every operator output with as many elements as the logits, so no storage is freed and reused."""

        def __init__(self, numel):
            super().__init__()
            self.numel = numel
            self.outputs = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            self.outputs += [tensor for tensor in tree_flatten(result)[0] if isinstance(tensor, torch.Tensor) and tensor.numel() == self.numel]
            return result

    def new_storages(function, logits, *arguments):
        logits = logits.requires_grad_(True)
        with LogitsSizedOutputs(logits.numel()) as mode:
            (gradient,) = torch.autograd.grad(function(logits, *arguments), logits)
        pointers = {tensor.untyped_storage().data_ptr() for tensor in mode.outputs}
        pointers.discard(logits.untyped_storage().data_ptr())
        return pointers, gradient

    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 50, (16,), generator=generator)
    targets[3] = -100
    storages, gradient = new_storages(cross_entropy, torch.randn(16, 50, generator=generator), targets)
    # The softmax buffer, which the backward turns into the gradient.
    assert storages == {gradient.untyped_storage().data_ptr()}, f"{len(storages)} logits-sized buffers"

    labels = torch.randint(0, 50, (2, 8), generator=generator)
    storages, gradient = new_storages(causal_lm_cross_entropy, torch.randn(2, 8, 50, generator=generator), labels)
    assert storages == {gradient.untyped_storage().data_ptr()}, f"{len(storages)} logits-sized buffers"


@pytest.mark.parametrize("loss", ["cross_entropy", "causal_lm_cross_entropy"])
def test_jax_jit_no_logits_temporary(loss):
    pytest.importorskip("jax")
    from backends.jax import runtime  # noqa: F401

    import jax

    from backends.jax import classification

    rng = np.random.default_rng(0)
    if loss == "cross_entropy":
        logits = jax.numpy.asarray(rng.standard_normal((64, 1000), dtype=np.float32))
        targets = jax.numpy.asarray(rng.integers(0, 1000, size=64))
    else:
        logits = jax.numpy.asarray(rng.standard_normal((2, 32, 1000), dtype=np.float32))
        targets = jax.numpy.asarray(rng.integers(0, 1000, size=(2, 32)))
    function = getattr(classification, loss)
    compiled = jax.jit(jax.grad(function)).lower(logits, targets).compile()
    statistics = compiled.memory_analysis()
    if statistics is None:
        pytest.skip(f"JAX {jax.__version__} reports no memory analysis on {jax.devices()[0].platform}")

    # XLA writes the gradient once and keeps no other (N, C) buffer.
    assert statistics.output_size_in_bytes == logits.nbytes
    assert statistics.temp_size_in_bytes < logits.nbytes
