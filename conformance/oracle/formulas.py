"""Every spec loss evaluated in mpmath at 50 significant digits, from the formulas of the loss catalog.

Each public function takes a case's ``(inputs, options)`` as the spec takes
them and returns a dict of ``Output`` keyed by check: "value" (or
"value:<output>" for a loss that returns a tuple) and "grad:<input>" for
every differentiable input of the spec. A gradient is that of
sum(loss), the spec's default cotangent of 1.

The functions share no code with ``losses``: they follow the catalog's
formulas, and the spec's docstrings only for the conventions a formula
leaves open (ignored rows, means over nothing, 0 log 0, clip boundaries).
Every float64 input converts to an mpf exactly, so the oracle evaluates the
formula on exactly the numbers the spec receives. Arithmetic runs at
``DIGITS`` significant digits, and the forms below keep that relative
accuracy where a direct form would cancel: log1p for softplus and log-softmax
of the largest logit, expm1 for log1mexp and k3, and probability-space CTC
recursions, which cannot underflow in mpmath's unbounded exponent range.

Sources of the formulas, as the loss catalog names them: z-loss from PaLM
(arXiv 2204.02311), CTC from Graves et al. (ICML 2006), Bradley-Terry with
a margin from Llama 2 (arXiv 2307.09288) and centring from Eisenstein et
al. (arXiv 2312.09244), the ranking loss from InstructGPT (arXiv
2203.02155), Plackett-Luce as ListMLE (Xia et al., ICML 2008), DPO (arXiv
2305.18290), rDPO (arXiv 2403.00409), IPO (arXiv 2310.12036), SimPO (arXiv
2405.14734), ORPO (arXiv 2403.07691), KTO (arXiv 2402.01306), PPO (arXiv
1707.06347) with DAPO's decoupled clip (arXiv 2503.14476) and the dual clip
(arXiv 1912.09729), GAE (arXiv 1506.02438), GRPO (arXiv 2402.03300) and Dr
GRPO (arXiv 2503.20783), and the k1, k2, k3 KL estimators from J. Schulman,
"Approximating KL Divergence" (2020).

Every gradient is a closed form evaluated in mpmath; none needs numerical
differentiation. Cross-entropy family: (A + 2 z_loss lse) p_c - a_c, then
the chain rule through hidden @ weight.T + bias. KL: -p. BCE: w [(1 - y)
sigma(x) - p y sigma(-x)]. MSE: +-2 (p - t). CTC: p_t(k) minus the
forward-backward posterior of class k at frame t. DPO, SimPO, KTO, ORPO,
Bradley-Terry and the ranking losses: the derivative of softplus is a
sigmoid. PPO: -A r off the clip. Value loss: 2 (V - R) or 0. k1, k2, k3: 1,
delta, 1 - e^-delta. Entropy: -p_j (log p_j + H). Plackett-Luce: the
probabilities of picking j at each step up to j, minus 1. Sequence
alignment: (onehot - p) / tau, and for tau the expected cost minus the gold
cost over tau^2. GAE and GRPO advantages have no gradient.

``Output.magnitude`` is the floor of the error measure in ``run``: the
scale of the rounding error that a float64 evaluation of the formula cannot
avoid (that error is a few eps times the magnitude). It is |value| plus, for each intermediate
that float64 must round (a difference of inputs, a computed logit, a
log-probability), the first-order change of the result when that
intermediate moves by its own size. Where the last step adds terms of both
signs, |value| is replaced by the sum of the terms' absolute values. A
log-probability uses ``log_softmax_error``, which does not grow with the
logits' offset, because these losses do not change when a row of logits
shifts by a constant. So an implementation that subtracts two large,
nearly equal numbers where a shift-invariant form would not is measured
against its result, not against its inputs. A magnitude of None marks an
element that is not compared, where the loss leaves the value undefined.
GRPO advantages are shift-invariant too, so r - mean is measured against
the group's spread.

Non-finite inputs at positions the loss reads: NaN propagates to every
output it affects, gradients included. +inf gives the formula's limit where
one exists (a saturated sigmoid, an infinite loss), and the gradient of a
loss that is infinite there is not compared. Positions a loss does not read
(ignored rows, masked tokens, padded frames) never enter the arithmetic, as
the spec's conventions require.

``Output.alternatives`` holds, for a gradient at a kink (a PPO or value
clip, the DPO hinge), the other one-sided derivative, where the exact
argument lies within ``KINK_ROUNDINGS`` float64 roundings of the kink. The
spec's rounded argument may fall on either side, so either derivative is
correct there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from mpmath import mp, mpf

DIGITS = 50
ZERO = mpf(0)
ONE = mpf(1)
NAN = mpf("nan")
INF = mpf("inf")

# Width, in float64 roundings, of the band around a kink in which either
# one-sided derivative is accepted.
KINK_ROUNDINGS = 8
FLOAT64_EPSILON = mpf(2) ** -52


@dataclass
class Output:
    """One checked array: the oracle's values, the floor of the error measure, and accepted alternatives."""

    value: np.ndarray
    magnitude: np.ndarray | None = None
    alternatives: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        # Arithmetic on a 0-d object array returns a bare mpf: keep every field an array.
        self.value = _obj(self.value)
        self.magnitude = None if self.magnitude is None else _obj(self.magnitude)
        self.alternatives = [_obj(alternative) for alternative in self.alternatives]


# Conversion and elementwise helpers ------------------------------------------------


def to_mp(array) -> np.ndarray:
    """Convert a float64 (or integer) array to an object array of mpf, exactly."""
    values = np.asarray(array, dtype=np.float64)
    result = np.empty(values.shape, dtype=object)
    for index, value in np.ndenumerate(values):
        result[index] = mpf(float(value))
    return result


def _obj(value) -> np.ndarray:
    """Return value as an object array; a bare mpf becomes a 0-d array."""
    if isinstance(value, np.ndarray):
        return value
    result = np.empty((), dtype=object)
    result[()] = value
    return result


def _zeros(shape) -> np.ndarray:
    result = np.empty(shape, dtype=object)
    result.fill(ZERO)
    return result


def _array(values, shape=()) -> np.ndarray:
    result = np.empty(shape, dtype=object)
    if shape == ():
        result[()] = values
    else:
        result[...] = values
    return result


def _times(weight, value):
    """Return weight * value, and exactly 0 when weight is 0: a term that label smoothing 0 leaves out adds no NaN."""
    return mpf(0) if weight == 0 else weight * value


def _map(function: Callable, array) -> np.ndarray:
    array = _obj(array)
    result = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        result[index] = function(value)
    return result


def _abs(array: np.ndarray) -> np.ndarray:
    return _map(abs, array)


def _isnan(value) -> bool:
    return mp.isnan(value)


def softplus(x):
    """log(1 + e^x), with log1p so that e^x far below 1 keeps its relative accuracy."""
    if _isnan(x):
        return NAN
    return mp.log1p(mp.exp(x))


def sigmoid(x):
    """1 / (1 + e^-x); the denominator is a sum of positives, so it never cancels."""
    if _isnan(x):
        return NAN
    return ONE / (ONE + mp.exp(-x))


def log1mexp(a):
    """log(1 - e^a) for a < 0: log1p(-e^a) where e^a <= 1/2, log(-expm1(a)) where e^a is near 1."""
    if mp.exp(a) <= mpf(0.5):
        return mp.log1p(-mp.exp(a))
    return mp.log(-mp.expm1(a))


def log_softmax(row: list) -> tuple[list, object]:
    """Return (log p_c for every c, lse(z)) of one row of logits.

    With m the largest logit and S = sum_{k != m} e^(z_k - z_m), lse = z_m +
    log1p(S) and log p_c = (z_c - z_m) - log1p(S). The two parts of log p_c
    have the same sign, so a row where one class has almost all the
    probability keeps log p of that class to full relative accuracy.
    """
    if any(_isnan(value) for value in row) or any(value == INF for value in row):
        return [NAN] * len(row), NAN
    top = max(range(len(row)), key=lambda k: row[k])
    peak = row[top]
    if peak == -INF:
        return [NAN] * len(row), -INF
    rest = mp.fsum(mp.exp(row[k] - peak) for k in range(len(row)) if k != top)
    log_rest = mp.log1p(rest)
    return [(value - peak) - log_rest for value in row], peak + log_rest


def log_softmax_error(row: list, lse) -> list:
    """Return, per class, the scale of the float64 rounding of log p_c = (z_c - max z) - log(sum e^(z - max z)).

    It is 1 + |z_c - max z| + (lse - max z): the shifted logit rounds to its
    own size, and the logarithm of a sum >= 1 rounds to about eps, plus its
    own size. It does not grow with the logits' offset, because the loss does
    not change when every logit of the row shifts by a constant.
    """
    finite = [v for v in row if mp.isfinite(v)]
    if not finite or not mp.isfinite(lse):
        return [NAN] * len(row)
    peak = max(finite)
    return [1 + abs(v - peak) + (lse - peak) for v in row]


def _reduce(values: np.ndarray, magnitudes: np.ndarray, reduction: str, denominator=None) -> Output:
    """Apply "none", "sum" or "mean" to per-item values and magnitudes; a mean over nothing is 0."""
    if reduction == "none":
        return Output(values, magnitudes)
    total = mp.fsum(values.ravel())
    total_magnitude = mp.fsum(magnitudes.ravel())
    if reduction == "sum":
        return Output(_array(total), _array(total_magnitude))
    count = mpf(values.size) if denominator is None else mpf(denominator)
    if count == 0:
        return Output(_array(ZERO), _array(ZERO))
    return Output(_array(total / count), _array(total_magnitude / count))


def _row_scale(reduction: str, denominator) -> mpf:
    """Return d loss / d per-item loss of a reduction (0 for a mean over nothing)."""
    if reduction in ("none", "sum"):
        return ONE
    return ONE / mpf(denominator) if denominator > 0 else ZERO


def _float(options: dict, name: str, default):
    value = options.get(name, default)
    return None if value is None else mpf(float(value))


# Cross-entropy family ---------------------------------------------------------------


@dataclass
class _CrossEntropyRows:
    """Per-row cross-entropy results: values, their magnitudes, gradients by the logits, and log p."""

    values: np.ndarray
    magnitudes: np.ndarray
    gradients: np.ndarray
    gradient_magnitudes: np.ndarray
    log_probs: np.ndarray


def _cross_entropy_rows(logits: np.ndarray, coefficients: np.ndarray, counted: np.ndarray, z_loss, logit_error=None) -> _CrossEntropyRows:
    """Evaluate l = -sum_c a_c log p_c + z_loss lse^2 and dl/dz_c = (A + 2 z_loss lse) p_c - a_c per counted row.

    logits and coefficients a are (N, C), counted is (N,). Uncounted rows are
    never read and give 0. logit_error (N, C), when given, is the scale of
    the float64 rounding of logits that are themselves computed (|h| |W| + |b|
    for a linear head); logits given as inputs are exact.

    The magnitudes use ``log_softmax_error``: log p_c carries a rounding of
    about eps times that scale, which p_c = e^(log p_c) turns into a relative
    error of the same size.
    """
    rows, classes = logits.shape
    values, magnitudes = _zeros(rows), _zeros(rows)
    gradients, gradient_magnitudes = _zeros((rows, classes)), _zeros((rows, classes))
    log_probs = _zeros((rows, classes))
    for i in range(rows):
        if not counted[i]:
            continue
        row = list(logits[i])
        log_p, lse = log_softmax(row)
        error = [ZERO] * classes if logit_error is None else list(logit_error[i])
        log_error = log_softmax_error(row, lse)
        a = list(coefficients[i])
        coefficient_sum = mp.fsum(a)
        pull = coefficient_sum + 2 * z_loss * abs(lse)
        p = [mp.exp(v) for v in log_p]
        # 0 log 0 = 0: a class with a zero coefficient adds nothing, even at log p = -inf.
        values[i] = mp.fsum(-a[c] * log_p[c] for c in range(classes) if a[c] != 0) + z_loss * lse**2
        # A rounding of logit c moves the loss by |dl/dz_c| <= pull p_c + a_c.
        propagated = mp.fsum((pull * p[c] + a[c]) * error[c] for c in range(classes))
        magnitudes[i] = mp.fsum(a[c] * log_error[c] for c in range(classes) if a[c] != 0) + z_loss * lse**2 + propagated
        for c in range(classes):
            gradients[i, c] = (coefficient_sum + 2 * z_loss * lse) * p[c] - a[c]
            exponent_error = ZERO if p[c] == 0 else p[c] * (log_error[c] + error[c])
            gradient_magnitudes[i, c] = pull * (p[c] + exponent_error) + a[c]
            log_probs[i, c] = log_p[c]
    return _CrossEntropyRows(values, magnitudes, gradients, gradient_magnitudes, log_probs)


def _index_coefficients(targets: np.ndarray, counted: np.ndarray, class_weight: np.ndarray, smoothing) -> np.ndarray:
    """a_c = (1 - eps) w_y [c = y] + (eps / C) w_c per row, zero on uncounted rows."""
    rows, classes = targets.shape[0], class_weight.shape[0]
    coefficients = _zeros((rows, classes))
    for i in range(rows):
        if not counted[i]:
            continue
        for c in range(classes):
            coefficients[i, c] = smoothing / classes * class_weight[c]
        y = int(targets[i])
        coefficients[i, y] += (1 - smoothing) * class_weight[y]
    return coefficients


def cross_entropy(inputs: dict, options: dict) -> dict:
    """Evaluate softmax cross-entropy: -sum_c q_c w_c log p_c + z_loss lse^2 per row, q = (1 - eps) onehot(y) + eps / C."""
    logits = np.asarray(inputs["logits"])
    targets = np.asarray(inputs["targets"])
    ignore_index = options.get("ignore_index", -100)
    smoothing = _float(options, "label_smoothing", 0.0)
    z_loss = _float(options, "z_loss", 0.0)
    reduction = options.get("reduction", "mean")

    shape = logits.shape
    classes = shape[-1]
    flat_logits = to_mp(logits).reshape(-1, classes)
    weight = inputs.get("weight")
    class_weight = _array([ONE] * classes, (classes,)) if weight is None else to_mp(weight)

    probability_targets = targets.dtype.kind == "f"
    if probability_targets:
        flat_targets = to_mp(targets).reshape(-1, classes)
        counted = np.ones(flat_logits.shape[0], dtype=bool)
        coefficients = ((1 - smoothing) * flat_targets + smoothing / classes) * class_weight[None, :]
        denominator = mpf(flat_logits.shape[0])
    else:
        flat_targets = targets.reshape(-1)
        counted = flat_targets != ignore_index
        coefficients = _index_coefficients(flat_targets, counted, class_weight, smoothing)
        denominator = mp.fsum(class_weight[int(y)] for y, keep in zip(flat_targets, counted) if keep)

    rows = _cross_entropy_rows(flat_logits, coefficients, counted, z_loss)
    results = {"value": _reduce(rows.values.reshape(shape[:-1]), rows.magnitudes.reshape(shape[:-1]), reduction, denominator)}
    scale = _row_scale(reduction, denominator)
    results["grad:logits"] = Output((rows.gradients * scale).reshape(shape), (rows.gradient_magnitudes * scale).reshape(shape))
    if probability_targets:
        # d/dt_c = -(1 - eps) w_c log p_c.
        log_p = rows.log_probs
        grad_targets = -(1 - smoothing) * class_weight[None, :] * log_p * scale
        log_error = np.array([log_softmax_error(list(flat_logits[i]), ZERO if not counted[i] else log_softmax(list(flat_logits[i]))[1]) for i in range(flat_logits.shape[0])], dtype=object)
        grad_targets_size = (1 - smoothing) * class_weight[None, :] * log_error * scale
        results["grad:targets"] = Output(grad_targets.reshape(shape), grad_targets_size.reshape(shape))
    return results


def linear_cross_entropy(inputs: dict, options: dict) -> dict:
    """Evaluate cross_entropy(hidden @ weight.T + bias, targets), with the chain rule for hidden, weight and bias."""
    hidden = np.asarray(inputs["hidden"])
    targets = np.asarray(inputs["targets"])
    ignore_index = options.get("ignore_index", -100)
    smoothing = _float(options, "label_smoothing", 0.0)
    z_loss = _float(options, "z_loss", 0.0)
    reduction = options.get("reduction", "mean")

    weight = to_mp(inputs["weight"])
    vocabulary, width = weight.shape
    bias = inputs.get("bias")
    bias_mp = _zeros(vocabulary) if bias is None else to_mp(bias)
    flat_targets = targets.reshape(-1)
    counted = flat_targets != ignore_index
    tokens = flat_targets.shape[0]

    # An ignored token's hidden state is never read: its row of X is 0.
    raw_hidden = np.asarray(hidden, dtype=np.float64).reshape(tokens, width)
    x = _zeros((tokens, width))
    for i in range(tokens):
        if counted[i]:
            x[i] = to_mp(raw_hidden[i])
    logits = np.dot(x, weight.T) + bias_mp[None, :]
    logit_error = np.dot(_abs(x), _abs(weight).T) + _abs(bias_mp)[None, :]

    class_weight = _array([ONE] * vocabulary, (vocabulary,))
    coefficients = _index_coefficients(flat_targets, counted, class_weight, smoothing)
    denominator = mpf(int(counted.sum()))
    rows = _cross_entropy_rows(logits, coefficients, counted, z_loss, logit_error)

    out_shape = targets.shape
    results = {"value": _reduce(rows.values.reshape(out_shape), rows.magnitudes.reshape(out_shape), reduction, denominator)}
    scale = _row_scale(reduction, denominator)
    gradient = rows.gradients * scale
    gradient_magnitude = rows.gradient_magnitudes * scale
    # An ignored token's hidden gradient is 0, even where 0 times a non-finite weight would be NaN.
    ignored_rows = ~counted[:, None]
    hidden_gradient = np.where(ignored_rows, mpf(0), np.dot(gradient, weight))
    hidden_magnitude = np.where(ignored_rows, mpf(0), np.dot(gradient_magnitude, _abs(weight)))
    results["grad:hidden"] = Output(hidden_gradient.reshape(hidden.shape), hidden_magnitude.reshape(hidden.shape))
    results["grad:weight"] = Output(np.dot(gradient.T, x), np.dot(gradient_magnitude.T, _abs(x)))
    if bias is not None:
        results["grad:bias"] = Output(gradient.sum(axis=0), gradient_magnitude.sum(axis=0))
    return results


def causal_lm_cross_entropy(inputs: dict, options: dict) -> dict:
    """Evaluate sum over counted positions of lse(z_bt) - z_bt[y_bt], divided by num_items_in_batch or the count."""
    logits = np.asarray(inputs["logits"])
    labels = np.asarray(inputs["labels"]).astype(np.int64)
    ignore_index = options.get("ignore_index", -100)
    shift = options.get("shift", True)
    num_items = options.get("num_items_in_batch")

    if shift:
        # Position t predicts labels[:, t + 1]; the last position predicts nothing.
        predicted = np.full_like(labels, ignore_index)
        predicted[:, :-1] = labels[:, 1:]
    else:
        predicted = labels
    classes = logits.shape[-1]
    flat_labels = predicted.reshape(-1)
    counted = flat_labels != ignore_index
    denominator = mpf(int(counted.sum())) if num_items is None else mpf(float(num_items))

    flat_logits = to_mp(logits).reshape(-1, classes)
    onehot = _index_coefficients(flat_labels, counted, _array([ONE] * classes, (classes,)), ZERO)
    rows = _cross_entropy_rows(flat_logits, onehot, counted, ZERO)
    scale = _row_scale("mean", denominator)
    value = mp.fsum(rows.values) * scale
    magnitude = mp.fsum(rows.magnitudes) * scale
    return {
        "value": Output(_array(value), _array(magnitude)),
        "grad:logits": Output((rows.gradients * scale).reshape(logits.shape), (rows.gradient_magnitudes * scale).reshape(logits.shape)),
    }


def kl_divergence(inputs: dict, options: dict) -> dict:
    """Evaluate KL(p || q) = sum_c p_c (log p_c - log q_c) per row, with 0 log 0 = 0; d/d log q_c = -p_c."""
    log_target = options.get("log_target", False)
    reduction = options.get("reduction", "batchmean")
    log_q = to_mp(inputs["log_predictions"])
    raw_targets = to_mp(inputs["targets"])
    shape = log_q.shape
    classes = shape[-1] if shape else 1

    if log_target:
        p = _map(mp.exp, raw_targets)
        log_p = raw_targets
    else:
        p = raw_targets
        log_p = _map(lambda v: mp.log(v) if v > 0 else ZERO, raw_targets)

    flat_p, flat_log_p, flat_log_q = (a.reshape(-1, classes) for a in (p, log_p, log_q))
    rows = flat_p.shape[0]
    values, magnitudes = _zeros(rows), _zeros(rows)
    for i in range(rows):
        terms, sizes = [], []
        for c in range(classes):
            pc = flat_p[i, c]
            if _isnan(pc):
                terms.append(NAN)
                sizes.append(NAN)
            elif pc != 0:
                terms.append(pc * (flat_log_p[i, c] - flat_log_q[i, c]))
                sizes.append(pc * (abs(flat_log_p[i, c]) + abs(flat_log_q[i, c])))
        values[i] = mp.fsum(terms) if terms else ZERO
        magnitudes[i] = mp.fsum(sizes) if sizes else ZERO

    row_shape = shape[:-1]
    batch_reduction = "mean" if reduction == "batchmean" else reduction
    value = _reduce(values.reshape(row_shape), magnitudes.reshape(row_shape), batch_reduction)
    scale = _row_scale(batch_reduction, rows)
    gradient = -p * scale
    return {"value": value, "grad:log_predictions": Output(gradient, _abs(gradient))}


def binary_cross_entropy_with_logits(inputs: dict, options: dict) -> dict:
    """Evaluate w [p y sp(-x) + (1 - y) sp(x)] per element; a term with a zero coefficient is 0 even at infinite x."""
    reduction = options.get("reduction", "mean")
    x = to_mp(inputs["logits"])
    y = to_mp(inputs["targets"])
    shape = x.shape
    weight = inputs.get("weight")
    pos_weight = inputs.get("pos_weight")
    w = np.broadcast_to(to_mp(weight), shape) if weight is not None else _array([ONE] * x.size, (x.size,)).reshape(shape)
    pw = np.broadcast_to(to_mp(pos_weight), shape) if pos_weight is not None else _array([ONE] * x.size, (x.size,)).reshape(shape)

    values, gradients, gradient_magnitudes = _zeros(shape), _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        xi, yi, wi, pi = x[index], y[index], w[index], pw[index]
        positive, negative = pi * yi, 1 - yi
        term = ZERO
        if positive != 0:
            term += positive * softplus(-xi)
        if negative != 0:
            term += negative * softplus(xi)
        values[index] = ZERO if wi == 0 else wi * term
        gradients[index] = wi * (negative * sigmoid(xi) - positive * sigmoid(-xi))
        gradient_magnitudes[index] = wi * (abs(negative) * sigmoid(xi) + abs(positive) * sigmoid(-xi))
    scale = _row_scale(reduction, x.size)
    return {
        "value": _reduce(values, _abs(values), reduction),
        "grad:logits": Output(gradients * scale, gradient_magnitudes * scale),
    }


def mse(inputs: dict, options: dict) -> dict:
    """Evaluate (p - t)^2 per element with no 1/2 factor; d/dp = 2 (p - t) = -d/dt."""
    reduction = options.get("reduction", "mean")
    difference = _obj(to_mp(inputs["predictions"]) - to_mp(inputs["targets"]))
    squares = _obj(difference * difference)
    scale = _row_scale(reduction, difference.size)
    gradient = 2 * difference * scale
    return {
        "value": _reduce(squares, _obj(squares).copy(), reduction),
        "grad:predictions": Output(gradient, _abs(gradient)),
        "grad:targets": Output(-gradient, _abs(gradient)),
    }


# CTC --------------------------------------------------------------------------------


def _ctc_sequence(log_probs: list, labels: list, blank: int):
    """Return (likelihood P, state posteriors per frame) of one sequence by the forward-backward algorithm.

    Probability space: alpha_t(s) = (alpha_{t-1}(s) + alpha_{t-1}(s-1) +
    [alpha_{t-1}(s-2)]) p_t(y'_s) over the extended sequence y' =
    (blank, y_1, blank, ..., y_L, blank), the skip allowed only between
    different labels (Graves et al. 2006). Every term is positive, so the
    sums lose nothing, and mpmath's exponents do not underflow.
    """
    extended = [blank]
    for label in labels:
        extended += [label, blank]
    states = len(extended)
    frames = len(log_probs)
    probs = [[mp.exp(v) for v in frame] for frame in log_probs]

    def may_skip(s):
        return s >= 2 and extended[s] != blank and extended[s] != extended[s - 2]

    finals = {states - 1} | ({states - 2} if labels else set())
    if frames == 0:
        return (ONE if not labels else ZERO), []

    alphas = []
    previous = [ONE] + [ZERO] * (states - 1)  # the virtual frame before frame 0 sits in state 0
    first = True
    for t in range(frames):
        current = []
        for s in range(states):
            if first:
                total = ONE if s <= 1 else ZERO
            else:
                total = previous[s]
                if s >= 1:
                    total += previous[s - 1]
                if may_skip(s):
                    total += previous[s - 2]
            current.append(total * probs[t][extended[s]])
        first = False
        alphas.append(current)
        previous = current
    likelihood = mp.fsum(previous[s] for s in finals)

    betas = [None] * frames
    following = [ONE if s in finals else ZERO for s in range(states)]
    betas[frames - 1] = following
    for t in range(frames - 2, -1, -1):
        weighted = [following[s] * probs[t + 1][extended[s]] for s in range(states)]
        current = []
        for s in range(states):
            total = weighted[s] + (weighted[s + 1] if s + 1 < states else ZERO)
            if s + 2 < states and may_skip(s + 2):
                total += weighted[s + 2]
            current.append(total)
        betas[t] = current
        following = current
    posteriors = [[alphas[t][s] * betas[t][s] for s in range(states)] for t in range(frames)]
    return likelihood, (posteriors, extended)


def ctc_loss(inputs: dict, options: dict) -> dict:
    """Evaluate -log of the summed probability of every alignment; d/dz_tk = p_t(k) - posterior of class k at frame t."""
    logits = np.asarray(inputs["logits"])
    targets = np.asarray(inputs["targets"])
    input_lengths = np.asarray(inputs["input_lengths"]).astype(np.int64)
    target_lengths = np.asarray(inputs["target_lengths"]).astype(np.int64)
    blank = int(options.get("blank", 0))
    reduction = options.get("reduction", "mean")
    zero_infinity = options.get("zero_infinity", False)
    batch, frames, classes = logits.shape

    losses, magnitudes = _zeros(batch), _zeros(batch)
    sequence_gradients = _zeros((batch, frames, classes))
    sequence_gradient_magnitudes = _zeros((batch, frames, classes))
    infinite = np.zeros(batch, dtype=bool)
    for b in range(batch):
        length = int(input_lengths[b])
        labels = [int(v) for v in targets[b, : int(target_lengths[b])]]
        log_probs, log_errors = [], []
        for t in range(length):
            row = list(to_mp(logits[b, t]))
            log_p, lse = log_softmax(row)
            log_probs.append(log_p)
            log_errors.append(log_softmax_error(row, lse))
        likelihood, lattice = _ctc_sequence(log_probs, labels, blank)
        if likelihood == 0:
            infinite[b] = True
            losses[b] = ZERO if zero_infinity else INF
            magnitudes[b] = ZERO if zero_infinity else INF
            continue
        losses[b] = -mp.log(likelihood)
        if length == 0:
            magnitudes[b] = abs(losses[b])
            continue
        posteriors, extended = lattice
        class_posteriors = [
            [mp.fsum(posteriors[t][s] for s in range(len(extended)) if extended[s] == k) / likelihood for k in range(classes)]
            for t in range(length)
        ]
        # Each log p_t(k) carries a rounding of about eps |log p_t(k)|, weighted by how often the alignments emit k at t.
        path_scale = mp.fsum(class_posteriors[t][k] * log_errors[t][k] for t in range(length) for k in range(classes))
        magnitudes[b] = abs(losses[b]) + path_scale
        for t in range(length):
            for k in range(classes):
                posterior = class_posteriors[t][k]
                p = mp.exp(log_probs[t][k])
                sequence_gradients[b, t, k] = p - posterior
                # A posterior is e^(alpha + beta + loss), whose exponent carries the roundings of both recursions.
                sequence_gradient_magnitudes[b, t, k] = p * (1 + log_errors[t][k]) + posterior * (1 + 2 * magnitudes[b])

    if reduction == "mean":
        divisors = [mpf(max(int(v), 1)) for v in target_lengths]
        value = _reduce(
            _array([losses[b] / divisors[b] for b in range(batch)], (batch,)),
            _array([magnitudes[b] / divisors[b] for b in range(batch)], (batch,)),
            "mean",
        )
        scales = [ONE / (divisors[b] * batch) for b in range(batch)]
    else:
        value = _reduce(losses, magnitudes, reduction)
        scales = [ONE] * batch

    gradient, gradient_magnitude = _zeros((batch, frames, classes)), _zeros((batch, frames, classes))
    for b in range(batch):
        if infinite[b]:
            # The loss is +inf for all logits near these, so it has no derivative.
            fill = ZERO if zero_infinity else NAN
            for t in range(int(input_lengths[b])):
                for k in range(classes):
                    gradient[b, t, k] = fill
                    gradient_magnitude[b, t, k] = ZERO
            continue
        gradient[b] = sequence_gradients[b] * scales[b]
        gradient_magnitude[b] = sequence_gradient_magnitudes[b] * scales[b]
    return {"value": value, "grad:logits": Output(gradient, gradient_magnitude)}


# Preference losses ------------------------------------------------------------------


def sequence_logps(inputs: dict, options: dict) -> dict:
    """Evaluate sum_t m_t l_t per sequence, divided by sum_t m_t when average (0 for a sequence without counted tokens)."""
    average = options.get("average", False)
    mask = np.asarray(inputs["mask"], dtype=bool)
    raw = np.asarray(inputs["token_logps"], dtype=np.float64)
    shape = mask.shape
    tokens = shape[-1]
    rows = int(np.prod(shape[:-1]))
    flat_mask = mask.reshape(rows, tokens)
    flat_logps = raw.reshape(rows, tokens)

    values, magnitudes = _zeros(rows), _zeros(rows)
    gradient = _zeros((rows, tokens))
    for i in range(rows):
        kept = [mpf(float(flat_logps[i, t])) for t in range(tokens) if flat_mask[i, t]]
        count = len(kept)
        divisor = mpf(count) if (average and count) else ONE
        if count == 0:
            continue
        values[i] = mp.fsum(kept) / divisor
        magnitudes[i] = mp.fsum(abs(v) for v in kept) / divisor
        for t in range(tokens):
            if flat_mask[i, t]:
                gradient[i, t] = ONE / divisor
    return {
        "value": Output(values.reshape(shape[:-1]), magnitudes.reshape(shape[:-1])),
        "grad:token_logps": Output(gradient.reshape(shape), _obj(gradient.reshape(shape)).copy()),
    }


def _kink_alternative(argument, kink, other):
    """Return `other` when the exact argument is within KINK_ROUNDINGS float64 roundings of the kink, else None."""
    if abs(argument - kink) <= KINK_ROUNDINGS * FLOAT64_EPSILON * (abs(argument) + abs(kink)):
        return other
    return None


def dpo_loss(inputs: dict, options: dict) -> dict:
    """Evaluate DPO and its variants on h = (pi_c - ref_c) - (pi_r - ref_r): sigmoid (cDPO), robust (rDPO), IPO and hinge."""
    beta = _float(options, "beta", 0.1)
    eps = _float(options, "label_smoothing", 0.0)
    loss_type = options.get("loss_type", "sigmoid")
    reference_free = options.get("reference_free", False)
    reduction = options.get("reduction", "mean")

    chosen = to_mp(inputs["policy_chosen_logps"])
    rejected = to_mp(inputs["policy_rejected_logps"])
    if reference_free:
        margin = _obj(chosen - rejected)
        margin_error = _abs(margin)
    else:
        chosen_ratio = _obj(chosen - to_mp(inputs["reference_chosen_logps"]))
        rejected_ratio = _obj(rejected - to_mp(inputs["reference_rejected_logps"]))
        margin = _obj(chosen_ratio - rejected_ratio)
        # Three float64 subtractions form h: each rounds to its own result.
        margin_error = _obj(_abs(chosen_ratio) + _abs(rejected_ratio) + _abs(margin))
    shape = margin.shape

    values, sizes = _zeros(shape), _zeros(shape)
    slopes, slope_sizes = _zeros(shape), _zeros(shape)
    alternative = np.full(shape, None, dtype=object)
    for index in np.ndindex(shape):
        h = margin[index]
        u = beta * h
        # The rounding of h (about eps * error) moves the loss by |dl/dh| error and the slope by |d2l/dh2| error.
        error = margin_error[index]
        if loss_type == "sigmoid":
            values[index] = (1 - eps) * softplus(-u) + _times(eps, softplus(u))
            sizes[index] = values[index] + beta * ((1 - eps) * sigmoid(-u) + eps * sigmoid(u)) * error
            slopes[index] = beta * (-(1 - eps) * sigmoid(-u) + eps * sigmoid(u))
            slope_sizes[index] = beta * ((1 - eps) * sigmoid(-u) + eps * sigmoid(u)) + beta**2 * sigmoid(u) * sigmoid(-u) * error
        elif loss_type == "robust":
            values[index] = ((1 - eps) * softplus(-u) - _times(eps, softplus(u))) / (1 - 2 * eps)
            sizes[index] = ((1 - eps) * softplus(-u) + _times(eps, softplus(u)) + beta * error) / (1 - 2 * eps)
            slopes[index] = beta * (-(1 - eps) * sigmoid(-u) - eps * sigmoid(u)) / (1 - 2 * eps)
            slope_sizes[index] = abs(slopes[index]) + beta**2 * sigmoid(u) * sigmoid(-u) * error / (1 - 2 * eps)
        elif loss_type == "ipo":
            target = 1 / (2 * beta)
            values[index] = (h - target) ** 2
            sizes[index] = (abs(h) + target) ** 2 + 2 * abs(h - target) * error
            slopes[index] = 2 * (h - target)
            slope_sizes[index] = 2 * (abs(h) + target + error)
        else:
            values[index] = NAN if _isnan(u) else max(ZERO, 1 - u)
            sizes[index] = 1 + abs(u) + beta * error
            # The subgradient at the kink is 0, the spec's convention (relu'(0) = 0).
            if _isnan(u):
                slopes[index] = NAN
            else:
                slopes[index] = -beta if 1 - u > 0 else ZERO
            slope_sizes[index] = beta
            alternative[index] = _kink_alternative(u, ONE, ZERO if slopes[index] != 0 else -beta)

    scale = _row_scale(reduction, margin.size)
    negated = _map(lambda v: None if v is None else -v * scale, alternative)
    scaled = _map(lambda v: None if v is None else v * scale, alternative)
    return {
        "value": _reduce(values, sizes, reduction),
        "grad:policy_chosen_logps": Output(slopes * scale, slope_sizes * scale, [scaled]),
        "grad:policy_rejected_logps": Output(-slopes * scale, slope_sizes * scale, [negated]),
    }


def simpo_loss(inputs: dict, options: dict) -> dict:
    """Evaluate the mean of (1 - eps) sp(-u) + eps sp(u) with u = beta (a_c - a_r) - gamma (SimPO, absolute gamma)."""
    beta = _float(options, "beta", 2.0)
    gamma = _float(options, "gamma", 0.5)
    eps = _float(options, "label_smoothing", 0.0)
    difference = _obj(to_mp(inputs["policy_chosen_logps"]) - to_mp(inputs["policy_rejected_logps"]))
    margin = _obj(beta * difference - gamma)
    # float64 rounds a_c - a_r, its product with beta and the subtraction of gamma.
    margin_error = _obj(2 * beta * _abs(difference) + _abs(margin))
    values = _map(lambda u: (1 - eps) * softplus(-u) + _times(eps, softplus(u)), margin)
    sizes, slopes, slope_sizes = _zeros(margin.shape), _zeros(margin.shape), _zeros(margin.shape)
    for index in np.ndindex(margin.shape):
        u, error = margin[index], margin_error[index]
        weight = (1 - eps) * sigmoid(-u) + eps * sigmoid(u)
        sizes[index] = values[index] + weight * error
        slopes[index] = beta * (-(1 - eps) * sigmoid(-u) + eps * sigmoid(u))
        slope_sizes[index] = beta * (weight + sigmoid(u) * sigmoid(-u) * error)
    scale = _row_scale("mean", margin.size)
    return {
        "value": _reduce(values, sizes, "mean"),
        "grad:policy_chosen_logps": Output(slopes * scale, slope_sizes * scale),
        "grad:policy_rejected_logps": Output(-slopes * scale, slope_sizes * scale),
    }


def orpo_loss(inputs: dict, options: dict) -> dict:
    """Evaluate mean(nll_c) + lam mean(sp(-D)), D = logodds(a_c) - logodds(a_r), logodds(a) = a - log(1 - e^a)."""
    lam = _float(options, "lam", 0.1)
    chosen = to_mp(inputs["chosen_avg_logps"])
    rejected = to_mp(inputs["rejected_avg_logps"])
    nll = to_mp(inputs["chosen_nll"])
    shape = nll.shape
    count = nll.size

    ratio, ratio_scale = _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        chosen_odds = chosen[index] - log1mexp(chosen[index])
        rejected_odds = rejected[index] - log1mexp(rejected[index])
        ratio[index] = chosen_odds - rejected_odds
        ratio_scale[index] = abs(chosen_odds) + abs(rejected_odds)
    odds_terms = _map(lambda d: softplus(-d), ratio)
    # sp(-D) and sigma(-D) take the rounding of D = logodds(a_c) - logodds(a_r), about eps times ratio_scale.
    odds_sizes = _zeros(shape)
    slope_sizes = _zeros(shape)
    for index in np.ndindex(shape):
        odds_sizes[index] = odds_terms[index] + sigmoid(-ratio[index]) * ratio_scale[index]
        slope_sizes[index] = 1 + sigmoid(ratio[index]) * ratio_scale[index]
    if count:
        value = mp.fsum(nll.ravel()) / count + lam * mp.fsum(odds_terms.ravel()) / count
        magnitude = mp.fsum(_abs(nll).ravel()) / count + lam * mp.fsum(odds_sizes.ravel()) / count
    else:
        value = magnitude = ZERO
    scale = _row_scale("mean", count)
    # d logodds / da = 1 / (1 - e^a) = -1 / expm1(a).
    push = _map(lambda d: lam * sigmoid(-d) * scale, ratio)
    grad_chosen, grad_rejected = _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        grad_chosen[index] = push[index] / mp.expm1(chosen[index])
        grad_rejected[index] = -push[index] / mp.expm1(rejected[index])
    grad_nll = _array([scale] * count, (count,)).reshape(shape)
    return {
        "value": Output(_array(value), _array(magnitude)),
        "grad:chosen_avg_logps": Output(grad_chosen, _abs(grad_chosen) * slope_sizes),
        "grad:rejected_avg_logps": Output(grad_rejected, _abs(grad_rejected) * slope_sizes),
        "grad:chosen_nll": Output(grad_nll, _obj(grad_nll).copy()),
    }


def kto_loss(inputs: dict, options: dict) -> dict:
    """Evaluate the mean of w_D sigma(-x) (desirable) or w_U sigma(x) (undesirable), x = beta (rho - max(0, kl_estimate))."""
    beta = _float(options, "beta", 0.1)
    desirable_weight = _float(options, "desirable_weight", 1.0)
    undesirable_weight = _float(options, "undesirable_weight", 1.0)
    ratio = _obj(to_mp(inputs["policy_logps"]) - to_mp(inputs["reference_logps"]))
    desirable = np.asarray(inputs["desirable"], dtype=bool)
    estimate = mpf(float(np.asarray(inputs["kl_estimate"])))
    baseline = NAN if _isnan(estimate) else max(ZERO, estimate)
    shape = ratio.shape

    values, gradients = _zeros(shape), _zeros(shape)
    sizes, gradient_sizes = _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        x = beta * (ratio[index] - baseline)
        # float64 rounds rho, rho - z0 and the product with beta: x carries about eps * error.
        error = beta * (abs(ratio[index]) + 2 * abs(ratio[index] - baseline))
        weight = desirable_weight if desirable[index] else undesirable_weight
        values[index] = weight * sigmoid(-x if desirable[index] else x)
        slope = weight * beta * sigmoid(x) * sigmoid(-x)
        gradients[index] = -slope if desirable[index] else slope
        sizes[index] = values[index] + weight * sigmoid(x) * sigmoid(-x) * error
        gradient_sizes[index] = slope * (1 + error)
    scale = _row_scale("mean", ratio.size)
    return {"value": _reduce(values, sizes, "mean"), "grad:policy_logps": Output(gradients * scale, gradient_sizes * scale)}


# RL policy losses -------------------------------------------------------------------


def _aggregation_weights(mask: np.ndarray, aggregation: str) -> np.ndarray:
    """Weight of each token in PPO's aggregations (token-mean, seq-mean-token-sum, -mean, -sum-norm)."""
    weights = _zeros(mask.shape)
    sequences = int(np.prod(mask.shape[:-1]))
    length = mask.shape[-1]
    flat_mask = mask.reshape(-1, length) if sequences else mask.reshape(0, max(length, 1))
    flat_weights = weights.reshape(-1, length) if sequences else weights.reshape(0, max(length, 1))
    total = int(mask.sum())
    for b in range(flat_mask.shape[0]):
        counted = int(flat_mask[b].sum())
        for t in range(length):
            if not flat_mask[b, t]:
                continue
            if aggregation == "token-mean":
                flat_weights[b, t] = ONE / total
            elif aggregation == "seq-mean-token-sum":
                flat_weights[b, t] = ONE / sequences
            elif aggregation == "seq-mean-token-mean":
                flat_weights[b, t] = ONE / (counted * sequences)
            else:
                flat_weights[b, t] = ONE / (sequences * length)
    return flat_weights.reshape(mask.shape)


def ppo_policy_loss(inputs: dict, options: dict) -> dict:
    """Evaluate PPO's clipped surrogate: -A min(r, hi) for A >= 0, |A| min(max(r, lo), c) for A < 0, aggregated."""
    clip_low = _float(options, "clip_low", 0.2)
    clip_high = _float(options, "clip_high", 0.2)
    dual_clip = _float(options, "dual_clip", None)
    aggregation = options.get("aggregation", "token-mean")
    mask = np.asarray(inputs["mask"], dtype=bool)
    logps = np.asarray(inputs["logps"], dtype=np.float64)
    old_logps = np.asarray(inputs["old_logps"], dtype=np.float64)
    advantages = np.asarray(inputs["advantages"], dtype=np.float64)
    if advantages.shape != mask.shape:  # one advantage per sequence
        advantages = np.broadcast_to(advantages[..., None], mask.shape)
    weights = _aggregation_weights(mask, aggregation)
    lower, upper = 1 - clip_low, 1 + clip_high

    total, total_size = ZERO, ZERO
    gradient, gradient_size = _zeros(mask.shape), _zeros(mask.shape)
    alternative = np.full(mask.shape, None, dtype=object)
    for index in zip(*np.nonzero(mask)):
        a = mpf(float(advantages[index]))
        log_ratio = mpf(float(logps[index])) - mpf(float(old_logps[index]))
        r = mp.exp(log_ratio)
        # float64 rounds the log ratio to about eps |log r|, which exp turns into that relative error of r.
        amplification = 1 + abs(log_ratio)
        if _isnan(a) or _isnan(r):
            # NaN in a counted token propagates to the loss and to that token's gradient.
            total, total_size = NAN, NAN
            gradient[index] = gradient_size[index] = NAN
            continue
        if a >= 0:
            loss = -a * min(r, upper)
            slope = -a * r if r <= upper else ZERO
            other = _kink_alternative(r, upper, ZERO if slope != 0 else -a * r)
        else:
            held = max(r, lower) if dual_clip is None else min(max(r, lower), dual_clip)
            loss = -a * held
            inside = r >= lower and (dual_clip is None or r <= dual_clip)
            slope = -a * r if inside else ZERO
            other = _kink_alternative(r, lower, ZERO if inside else -a * r)
            if other is None and dual_clip is not None:
                other = _kink_alternative(r, dual_clip, ZERO if inside else -a * r)
        w = weights[index]
        total += w * loss
        total_size += w * abs(loss) * (amplification if slope != 0 else 1)
        gradient[index] = w * slope
        gradient_size[index] = w * abs(a) * r * amplification
        alternative[index] = None if other is None else w * other
    return {"value": Output(_array(total), _array(total_size)), "grad:logps": Output(gradient, gradient_size, [alternative])}


def value_loss(inputs: dict, options: dict) -> dict:
    """Evaluate scale max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c), masked mean."""
    clip = _float(options, "clip", 0.2)
    scale = _float(options, "scale", 0.5)
    mask = np.asarray(inputs["mask"], dtype=bool)
    values = np.asarray(inputs["values"], dtype=np.float64)
    old_values = np.asarray(inputs["old_values"], dtype=np.float64)
    returns = np.asarray(inputs["returns"], dtype=np.float64)
    count = int(mask.sum())
    factor = ONE / count if count else ZERO

    total, total_size = ZERO, ZERO
    gradient, gradient_size = _zeros(mask.shape), _zeros(mask.shape)
    alternative = np.full(mask.shape, None, dtype=object)
    for index in zip(*np.nonzero(mask)):
        v, r = mpf(float(values[index])), mpf(float(returns[index]))
        old_read = clip is not None and _isnan(mpf(float(old_values[index])))
        if _isnan(v) or _isnan(r) or old_read:
            # NaN in a counted token propagates to the loss and to that token's gradient.
            total = total_size = NAN
            gradient[index] = gradient_size[index] = NAN
            continue
        error = v - r
        if clip is None:
            total += scale * error**2
            total_size += scale * error**2
            gradient[index] = 2 * scale * error * factor
            gradient_size[index] = abs(gradient[index])
            continue
        old = mpf(float(old_values[index]))
        change = v - old
        clipped_value = old + min(max(change, -clip), clip)
        clipped_error = clipped_value - r
        if error**2 >= clipped_error**2:
            # Inside the clip range V_clip = V exactly, so every tie takes this branch.
            total += scale * error**2
            total_size += scale * error**2
            slope = 2 * error
        else:
            total += scale * clipped_error**2
            total_size += scale * (abs(old) + clip + abs(r)) ** 2
            slope = ZERO  # V_clip is pinned at V_old +- c, which does not move with V
        gradient[index] = scale * slope * factor
        gradient_size[index] = scale * 2 * (abs(v) + abs(r)) * factor
        # Near the clip edge, or near a tie of the two errors outside the clip range (inside it
        # the two errors are equal and the derivative is 2 (V - R)), the float64 branch may differ.
        near_edge = _kink_alternative(abs(change), clip, True)
        near_tie = abs(change) > clip and _kink_alternative(error**2, clipped_error**2, True)
        if near_edge or near_tie:
            other = 2 * error if slope == 0 else ZERO
            alternative[index] = scale * other * factor
    return {
        "value": Output(_array(total * factor), _array(total_size * factor)),
        "grad:values": Output(gradient, gradient_size, [alternative]),
    }


def kl_penalty(inputs: dict, options: dict) -> dict:
    """Evaluate k1 = delta, k2 = delta^2 / 2, k3 = e^-delta - 1 + delta per token, delta = logps - ref_logps."""
    estimator = options.get("estimator", "k1")
    delta = _obj(to_mp(inputs["logps"]) - to_mp(inputs["ref_logps"]))
    shape = delta.shape
    values, sizes, slopes, slope_sizes = _zeros(shape), _zeros(shape), _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        d = delta[index]
        if estimator == "k1":
            values[index], sizes[index], slopes[index], slope_sizes[index] = d, abs(d), ONE, ONE
        elif estimator == "k2":
            values[index], sizes[index], slopes[index], slope_sizes[index] = d * d / 2, d * d / 2, d, abs(d)
        else:
            # e^-delta - 1 + delta cancels to delta^2 / 2 for small |delta|: add digits for what cancels.
            lost = 0 if d == 0 else max(0, int(-mp.log10(abs(d))) * 2)
            with mp.extradps(lost + 10):
                values[index] = +(mp.expm1(-d) + d)
            # float64 rounds delta to about eps |delta|; d k3 / d delta = -expm1(-delta).
            sizes[index] = abs(mp.expm1(-d)) * (1 + abs(d)) + abs(d)
            slopes[index] = -mp.expm1(-d)
            slope_sizes[index] = abs(mp.expm1(-d)) + mp.exp(-d) * abs(d)
    return {"value": Output(values, sizes), "grad:logps": Output(slopes, slope_sizes)}


def entropy_from_logits(inputs: dict, options: dict) -> dict:
    """Evaluate H = -sum_v p_v log p_v per counted token; dH/dz_j = -p_j (log p_j + H). Masked tokens give 0."""
    logits = np.asarray(inputs["logits"], dtype=np.float64)
    mask = np.asarray(inputs["mask"], dtype=bool)
    classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, classes)
    flat_mask = mask.reshape(-1)
    rows = flat_mask.shape[0]

    values, sizes = _zeros(rows), _zeros(rows)
    gradients, gradient_sizes = _zeros((rows, classes)), _zeros((rows, classes))
    for i in range(rows):
        if not flat_mask[i]:
            continue
        row = list(to_mp(flat_logits[i]))
        log_p, _ = log_softmax(row)
        if any(_isnan(v) for v in log_p):
            values[i] = sizes[i] = NAN
            for c in range(classes):
                gradients[i, c] = NAN
            continue
        p = [mp.exp(v) for v in log_p]
        # An impossible class (p = 0) contributes 0, the limit of p log p.
        entropy = -mp.fsum(p[c] * log_p[c] for c in range(classes) if p[c] != 0)
        values[i] = entropy
        peak = max(row)
        shifted = [row[c] - peak for c in range(classes)]
        live = [c for c in range(classes) if p[c] != 0]
        mean_shifted = mp.fsum(p[c] * shifted[c] for c in live)
        # p_c = e^(s_c - lse) carries the relative rounding of s_c times |s_c|.
        spread = mp.fsum(p[c] * abs(shifted[c]) * (1 + abs(shifted[c])) for c in live)
        # dH/ds_c = -p_c (s_c - mean s): a relative rounding of each s_c moves H by p_c |s_c - mean s| |s_c|.
        sizes[i] = entropy + mp.fsum(p[c] * abs(shifted[c] - mean_shifted) * abs(shifted[c]) for c in live)
        for c in live:
            # log p_c + H = s_c - sum_v p_v s_v: this form is exact where the logits are equal, log p_c + H
            # would leave a 50-digit rounding of log C (5e-52 at C = 5) in place of 0.
            gradients[i, c] = -p[c] * (shifted[c] - mean_shifted)
            gradient_sizes[i, c] = p[c] * (abs(shifted[c]) + spread) * (1 + abs(shifted[c]))
    shape = mask.shape
    return {
        "value": Output(values.reshape(shape), sizes.reshape(shape)),
        "grad:logits": Output(gradients.reshape(logits.shape), gradient_sizes.reshape(logits.shape)),
    }


# Ranking and reward losses -----------------------------------------------------------


def _valid(inputs: dict, name: str) -> np.ndarray:
    mask = inputs.get("mask")
    shape = np.shape(inputs[name])
    return np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def _ranking(inputs: dict, pooled: bool) -> dict:
    """Evaluate the pairwise softplus(-(r_i - r_j)) over valid pairs i < j: per-prompt means averaged, or one pooled mean."""
    valid = _valid(inputs, "rewards")
    raw = np.asarray(inputs["rewards"], dtype=np.float64)
    prompts, completions = raw.shape
    rewards = _zeros(raw.shape)
    for index in zip(*np.nonzero(valid)):
        rewards[index] = mpf(float(raw[index]))

    pairs = [[(i, j) for i in range(completions) for j in range(i + 1, completions) if valid[b, i] and valid[b, j]] for b in range(prompts)]
    counted = [b for b in range(prompts) if pairs[b]]
    all_pairs = sum(len(p) for p in pairs)
    total, total_size = ZERO, ZERO
    gradient, gradient_size = _zeros(raw.shape), _zeros(raw.shape)
    for b in counted:
        weight = ONE / all_pairs if pooled else ONE / (len(pairs[b]) * len(counted))
        pair_losses = [softplus(-(rewards[b, i] - rewards[b, j])) for i, j in pairs[b]]
        if not all(mp.isfinite(v) for v in pair_losses):
            # An infinite or NaN pair loss makes the loss non-finite, and its gradient undefined.
            total += mp.fsum(pair_losses)
            total_size += mp.fsum(pair_losses)
            for k in range(completions):
                gradient_size[b, k] = None
            continue
        for i, j in pairs[b]:
            d = rewards[b, i] - rewards[b, j]
            total += weight * softplus(-d)
            push = weight * sigmoid(-d)
            # float64 rounds d to about eps |d|: that moves softplus by push |d| and sigma by sigma' |d|.
            total_size += weight * softplus(-d) + push * abs(d)
            push_size = push + weight * sigmoid(d) * sigmoid(-d) * abs(d)
            gradient[b, i] -= push
            gradient[b, j] += push
            gradient_size[b, i] += push_size
            gradient_size[b, j] += push_size
    return {"value": Output(_array(total), _array(total_size)), "grad:rewards": Output(gradient, gradient_size)}


def ranking_loss(inputs: dict, options: dict) -> dict:
    """Evaluate InstructGPT's ranking loss: per prompt the mean over its ranked pairs, then the mean over prompts."""
    return _ranking(inputs, pooled=False)


def ranking_loss_pooled(inputs: dict, options: dict) -> dict:
    """Evaluate the ranking loss with every valid pair of the batch in one mean."""
    return _ranking(inputs, pooled=True)


def plackett_luce_loss(inputs: dict, options: dict) -> dict:
    """Evaluate sum over valid k of lse_{j >= k}(s_j) - s_k per list, mean over lists with two or more valid items."""
    valid = _valid(inputs, "scores")
    raw = np.asarray(inputs["scores"], dtype=np.float64)
    lists = raw.shape[0]
    counted = [b for b in range(lists) if valid[b].sum() >= 2]
    total, total_size = ZERO, ZERO
    gradient, gradient_size = _zeros(raw.shape), _zeros(raw.shape)
    for b in counted:
        weight = ONE / len(counted)
        positions = [k for k in range(raw.shape[1]) if valid[b, k]]
        scores = {k: mpf(float(raw[b, k])) for k in positions}
        if not all(mp.isfinite(v) for v in scores.values()):
            # NaN propagates. With +inf the limit of each step is +inf (an earlier item loses
            # all probability) or 0, and the gradient of the list is left undefined.
            for step, k in enumerate(positions):
                rest = [scores[j] for j in positions[step + 1 :]]
                others = mp.fsum(mp.exp(v - scores[k]) for v in rest) if rest else ZERO
                term = ZERO if (scores[k] == INF and all(v < INF for v in rest)) else mp.log1p(others)
                total += weight * term
                total_size += weight * abs(term)
            for k in range(raw.shape[1]):
                gradient_size[b, k] = None
            continue
        for step, k in enumerate(positions):
            rest = positions[step:]
            # -log softmax(s over the items left)_k = log1p(sum_{j > k} e^(s_j - s_k)), >= 0.
            others = mp.fsum(mp.exp(scores[j] - scores[k]) for j in rest if j != k)
            total += weight * mp.log1p(others)
            suffix_lse = scores[k] + mp.log1p(others)
            suffix = [scores[j] for j in rest]
            log_error = log_softmax_error(suffix, suffix_lse)
            total_size += weight * log_error[0]
            for n, j in enumerate(rest):
                choice = mp.exp(scores[j] - suffix_lse)
                gradient[b, j] += weight * choice
                gradient_size[b, j] += weight * choice * (1 + log_error[n])
        for k in positions:
            gradient[b, k] -= weight
            gradient_size[b, k] += weight
    return {"value": Output(_array(total), _array(total_size)), "grad:scores": Output(gradient, gradient_size)}


def sequence_alignment_loss(inputs: dict, options: dict) -> dict:
    """Evaluate -log softmax(-s_i / tau)_{j(i)} per source position over the valid targets (mask True, cost finite)."""
    reduction = options.get("reduction", "sum")
    temperature_input = inputs.get("temperature")
    differentiate_temperature = temperature_input is not None
    tau = mpf(float(np.asarray(temperature_input))) if differentiate_temperature else _float(options, "temperature", 1.0)
    raw = np.asarray(inputs["scores"], dtype=np.float64)
    alignment = np.asarray(inputs["alignment"]).astype(np.int64)
    mask = inputs.get("mask")
    targets = raw.shape[-1]
    leading = raw.shape[:-2]
    target_valid = np.ones(leading + (targets,), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)

    positions_shape = raw.shape[:-1]
    values, sizes = _zeros(positions_shape), _zeros(positions_shape)
    gradient, gradient_size = _zeros(raw.shape), _zeros(raw.shape)
    temperature_sum, temperature_size = ZERO, ZERO
    position_scale = _row_scale(reduction, int(np.prod(positions_shape)))
    for position in np.ndindex(positions_shape):
        lead = position[:-1]
        usable = [k for k in range(targets) if target_valid[lead + (k,)] and raw[position + (k,)] != np.inf]
        gold = int(alignment[position])
        costs = {k: mpf(float(raw[position + (k,)])) for k in usable}
        logits = [(-costs[k] / tau) for k in usable]
        if gold not in usable:
            # A gold cost of +inf has probability 0: the loss is +inf (NaN with no usable target), no gradient.
            values[position] = INF if usable else NAN
            sizes[position] = values[position]
            for k in range(targets):
                gradient_size[position + (k,)] = None
            continue
        log_p, lse = log_softmax(logits)
        log_error = log_softmax_error(logits, lse)
        gold_slot = usable.index(gold)
        values[position] = -log_p[gold_slot]
        probabilities = {k: mp.exp(log_p[n]) for n, k in enumerate(usable)}
        # float64 rounds each logit -s_k / tau to about eps |s_k / tau|; the loss moves by |p_k - onehot_k| times that.
        logit_error = {k: abs(logits[n]) for n, k in enumerate(usable)}
        propagated = mp.fsum((probabilities[k] + (1 if k == gold else 0)) * logit_error[k] for k in usable)
        sizes[position] = log_error[gold_slot] + propagated
        lse_error = mp.fsum(probabilities[k] * logit_error[k] for k in usable)
        exponent_scale = {k: 1 + log_error[n] + logit_error[k] + lse_error for n, k in enumerate(usable)}
        for k in usable:
            onehot = ONE if k == gold else ZERO
            gradient[position + (k,)] = position_scale * (onehot - probabilities[k]) / tau
            gradient_size[position + (k,)] = position_scale * (onehot + probabilities[k] * exponent_scale[k]) / tau
        expected = mp.fsum(probabilities[k] * costs[k] for k in usable)
        temperature_sum += position_scale * (expected - costs[gold]) / tau**2
        expected_size = mp.fsum(probabilities[k] * abs(costs[k]) * exponent_scale[k] for k in usable)
        temperature_size += position_scale * (expected_size + abs(costs[gold])) / tau**2

    results = {"value": _reduce(values, sizes, reduction), "grad:scores": Output(gradient, gradient_size)}
    if differentiate_temperature:
        finite = all(mp.isfinite(v) for v in values.ravel())
        results["grad:temperature"] = Output(_array(temperature_sum), _array(temperature_size if finite else None))
    return results


def bradley_terry_loss(inputs: dict, options: dict) -> dict:
    """Evaluate sp(-(r_c - r_r - m)) + eta (r_c + r_r)^2 per pair, with margin m and centring coefficient eta."""
    eta = _float(options, "center_coefficient", 0.0)
    reduction = options.get("reduction", "mean")
    chosen = to_mp(inputs["chosen_rewards"])
    rejected = to_mp(inputs["rejected_rewards"])
    margin = inputs.get("margin")
    offset = to_mp(margin) if margin is not None else _zeros(chosen.shape)
    shape = chosen.shape

    values, sizes, push, push_sizes, centring = _zeros(shape), _zeros(shape), _zeros(shape), _zeros(shape), _zeros(shape)
    for index in np.ndindex(shape):
        d = chosen[index] - rejected[index] - offset[index]
        total = chosen[index] + rejected[index]
        # float64 rounds r_c - r_r and then d: d carries about eps (|r_c - r_r| + |d|).
        error = abs(chosen[index] - rejected[index]) + abs(d)
        values[index] = softplus(-d) + (eta * total**2 if eta else ZERO)
        sizes[index] = softplus(-d) + sigmoid(-d) * error + (eta * total**2 if eta else ZERO)
        push[index] = sigmoid(-d)
        push_sizes[index] = sigmoid(-d) + sigmoid(d) * sigmoid(-d) * error
        centring[index] = 2 * eta * total if eta else ZERO
    scale = _row_scale(reduction, chosen.size)
    size = (push_sizes + _abs(centring)) * scale
    return {
        "value": _reduce(values, sizes, reduction),
        "grad:chosen_rewards": Output((centring - push) * scale, size),
        "grad:rejected_rewards": Output((centring + push) * scale, _obj(size).copy()),
    }


# Advantage estimators ---------------------------------------------------------------


def gae(inputs: dict, options: dict) -> dict:
    """Evaluate A_t = delta_t + gamma lam A_next, delta_t = r_t + gamma V_next - V_t over counted tokens; returns A + V."""
    gamma = _float(options, "gamma", 1.0)
    lam = _float(options, "lam", 0.95)
    mask = np.asarray(inputs["mask"], dtype=bool)
    rewards = np.asarray(inputs["rewards"], dtype=np.float64)
    values = np.asarray(inputs["values"], dtype=np.float64)
    shape = mask.shape

    advantages, advantage_sizes = _zeros(shape), _zeros(shape)
    returns, return_sizes = _zeros(shape), _zeros(shape)
    for b in range(shape[0]):
        next_value, next_value_size = ZERO, ZERO
        next_advantage, next_advantage_size = ZERO, ZERO
        # Masked tokens are skipped, not time steps: the scan goes from one counted token to the next.
        for t in reversed(range(shape[1])):
            if not mask[b, t]:
                continue
            r, v = mpf(float(rewards[b, t])), mpf(float(values[b, t]))
            delta = r + gamma * next_value - v
            advantage = delta + gamma * lam * next_advantage
            size = abs(r) + gamma * next_value_size + abs(v) + gamma * lam * next_advantage_size
            advantages[b, t], advantage_sizes[b, t] = advantage, size
            returns[b, t], return_sizes[b, t] = advantage + v, size + abs(v)
            next_value, next_value_size = v, abs(v)
            next_advantage, next_advantage_size = advantage, size
    return {"value:advantages": Output(advantages, advantage_sizes), "value:returns": Output(returns, return_sizes)}


def grpo_advantages(inputs: dict, options: dict) -> dict:
    """Evaluate (r - mean_g) / (std_g + eps) per group with the sample std (ddof 1), or r - mean_g without scaling."""
    eps = _float(options, "eps", 1e-6)
    scale_by_std = options.get("scale_by_std", True)
    rewards = to_mp(inputs["rewards"])
    ids = np.asarray(inputs["group_ids"])
    advantages, sizes = _zeros(rewards.shape), _zeros(rewards.shape)
    for group in np.unique(ids):
        members = np.flatnonzero(ids == group)
        group_rewards = [rewards[i] for i in members]
        count = len(group_rewards)
        mean = mp.fsum(group_rewards) / count
        centred = [r - mean for r in group_rewards]
        std = mp.sqrt(mp.fsum(c * c for c in centred) / (count - 1)) if count >= 2 else ZERO
        # Equal rewards centre to exactly 0 here, and 0 / (0 + eps) = 0, also for eps = 0.
        divisor = std + eps if (scale_by_std and std != 0) else ONE
        # The advantages do not change when every reward of the group shifts by a constant, so
        # r_i - mean is measured against the group's spread, not against the level of the rewards.
        spread = max(abs(c) for c in centred)
        for i, c in zip(members, centred):
            advantages[i] = c / divisor
            sizes[i] = (abs(c) + spread) / divisor
    return {"value": Output(advantages, sizes)}


ORACLES: dict[str, Callable[[dict, dict], dict]] = {
    "cross_entropy": cross_entropy,
    "linear_cross_entropy": linear_cross_entropy,
    "causal_lm_cross_entropy": causal_lm_cross_entropy,
    "kl_divergence": kl_divergence,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "mse": mse,
    "ctc_loss": ctc_loss,
    "sequence_logps": sequence_logps,
    "dpo_loss": dpo_loss,
    "simpo_loss": simpo_loss,
    "orpo_loss": orpo_loss,
    "kto_loss": kto_loss,
    "ppo_policy_loss": ppo_policy_loss,
    "value_loss": value_loss,
    "kl_penalty": kl_penalty,
    "entropy_from_logits": entropy_from_logits,
    "ranking_loss": ranking_loss,
    "ranking_loss_pooled": ranking_loss_pooled,
    "plackett_luce_loss": plackett_luce_loss,
    "sequence_alignment_loss": sequence_alignment_loss,
    "bradley_terry_loss": bradley_terry_loss,
    "gae": gae,
    "grpo_advantages": grpo_advantages,
}


def evaluate(loss: str, inputs: dict, options: dict) -> dict:
    """Evaluate one loss's oracle at DIGITS significant digits."""
    with mp.workdps(DIGITS):
        return ORACLES[loss](inputs, options)


__all__ = ["DIGITS", "ORACLES", "Output", "evaluate", "log1mexp", "log_softmax", "sigmoid", "softplus", "to_mp"]
