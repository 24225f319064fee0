"""Classification and regression losses: cross-entropy, the token-level losses and mean squared error.

The token-level losses are the causal language-model cross-entropy, the KL
divergence between class distributions, and binary cross-entropy on logits.

Every function computes in float64 whatever the input dtype and returns a
float64 array. Each loss has a ``*_grad`` twin that returns the vector-Jacobian
product: the gradient of ``sum(cotangent * loss)`` with respect to every
differentiable input, as a dict keyed by argument name.
"""

from __future__ import annotations

import numpy as np

from ._checks import require_class_targets_in_range, require_nonnegative_weight, validate_cross_entropy, validate_mse
from ._numerics import as_float64, logsumexp, reduce, reduction_scale, sigmoid, softplus, tensor_info
from ._registry import LossSpec, register
from ._validate_classification import (
    require_labels_in_range,
    require_nonnegative_finite,
    require_nonnegative_probabilities,
    require_probabilities_in_unit_interval,
    validate_binary_cross_entropy,
    validate_causal_lm_cross_entropy,
    validate_kl_divergence,
    validate_linear_cross_entropy,
    validate_num_items_in_batch,
)

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "causal_lm_cross_entropy",
    "causal_lm_cross_entropy_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "kl_divergence",
    "kl_divergence_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_grad",
    "mse",
    "mse_grad",
]


def _prepare_cross_entropy(logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction):
    """Validate the arguments and compute what the value and the gradient share.

    Returns (target_kind, counted, safe_targets, target_weight, class_weight,
    lse, log_probs, denominator). safe_targets and target_weight (w_y, zero on
    ignored rows) are None for probability targets.
    """
    target_kind = validate_cross_entropy(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    logits = as_float64(logits)
    num_classes = logits.shape[-1]
    class_weight = np.ones(num_classes) if weight is None else as_float64(weight)
    if weight is not None:
        has_weights = class_weight.size > 0
        require_nonnegative_weight(
            float(class_weight.min()) if has_weights else None,
            float(class_weight.max()) if has_weights else None,
        )

    safe_targets = target_weight = None
    if target_kind == "index":
        targets = np.asarray(targets)
        counted = targets != ignore_index
        kept = targets[counted]
        require_class_targets_in_range(
            int(kept.min()) if kept.size else None,
            int(kept.max()) if kept.size else None,
            num_classes,
            ignore_index,
        )
        safe_targets = np.where(counted, targets, 0).astype(np.int64)
        target_weight = np.where(counted, class_weight[safe_targets], 0.0)
        denominator = float(np.sum(target_weight))
    else:
        counted = np.ones(logits.shape[:-1], dtype=bool)
        denominator = float(np.prod(logits.shape[:-1]))

    # Ignored rows are replaced by zeros before any arithmetic, so -inf or NaN
    # logits there cannot leak into the value or the gradient.
    safe_logits = np.where(counted[..., None], logits, 0.0)
    lse = logsumexp(safe_logits, axis=-1)
    log_probs = safe_logits - lse[..., None]
    return target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator


def _weighted_sum(coefficients, log_probs):
    """sum_c coefficients_c log_probs_c over the class axis, with 0 * log 0 = 0."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(coefficients == 0.0, 0.0, coefficients * log_probs), axis=-1)


def _gather(values, safe_targets):
    return np.take_along_axis(values, safe_targets[..., None], axis=-1)[..., 0]


def cross_entropy(
    logits,
    targets,
    *,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    r"""Softmax cross-entropy with class weights, ignored targets, label smoothing and z-loss.

    For one row of logits z over C classes, with log p = z - lse(z)::

        loss = -sum_c q_c w_c log p_c + z_loss * lse(z)^2
        q    = (1 - eps) onehot(y) + eps / C     (integer targets y)
        q    = (1 - eps) t + eps / C             (probability targets t)

    Args:
        logits: floating array (..., C), class axis last (as optax and
            TensorFlow; PyTorch puts it at axis 1).
        targets: integer class ids of shape logits.shape[:-1], or floating class
            probabilities of shape logits.shape. Probabilities are used as given,
            as in PyTorch: the loss is linear in them, and neither negative
            entries nor rows that do not sum to 1 are rejected.
        weight: optional floating array (C,) of non-negative class weights w
            (default all ones). Not differentiated.
        ignore_index: integer targets equal to this id contribute nothing to the
            value or the gradient, whatever their logits (PyTorch's default -100).
        label_smoothing: eps in [0, 1]. The class weights multiply the smoothing
            term too, as in PyTorch's ``cross_entropy``.
        z_loss: coefficient of lse(z)^2 added to each counted row (PaLM,
            Chowdhery et al. 2022, arXiv 2204.02311, used 1e-4). It is not
            multiplied by the class weight.
        reduction: "none" returns the per-row losses (logits.shape[:-1]), and
            "sum" adds them. "mean" divides the sum by the sum of w_y over counted
            rows for integer targets (PyTorch's weighted mean). For probability
            targets it divides by the number of rows, also as PyTorch does.

    Returns:
        float64 array: per-row losses, or a 0-d array for "sum" and "mean".

    Conventions of the spec:
        - A mean whose denominator is zero (every target ignored, an empty batch,
          or zero weight on every counted target) is 0, with zero gradient.
          PyTorch returns NaN there.
        - A term with q_c w_c = 0 is 0 even where log p_c = -inf (0 log 0 = 0).
    """
    (target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator) = _prepare_cross_entropy(
        logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction
    )
    num_classes = log_probs.shape[-1]

    if target_kind == "index":
        # -(1 - eps) w_y log p_y - (eps / C) sum_c w_c log p_c, without building q.
        target_log_probs = _gather(log_probs, safe_targets)
        per_row = -(1.0 - label_smoothing) * np.where(target_weight == 0.0, 0.0, target_weight * target_log_probs)
        if label_smoothing:
            per_row = per_row - (label_smoothing / num_classes) * _weighted_sum(class_weight, log_probs)
        per_row = np.where(counted, per_row, 0.0)
    else:
        probabilities = (1.0 - label_smoothing) * as_float64(targets) + label_smoothing / num_classes
        per_row = -_weighted_sum(probabilities * class_weight, log_probs)
    per_row = per_row + z_loss * np.where(counted, lse**2, 0.0)

    return reduce(per_row, reduction, denominator)


def cross_entropy_grad(
    logits,
    targets,
    *,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * cross_entropy(...)).

    Keys: "logits" always, and "targets" for probability targets. With row
    coefficients a (see ``cross_entropy``) and A = sum_c a_c, the row gradient is
    d/dz_c = A p_c - a_c + 2 z_loss lse(z) p_c, and zero on ignored rows.
    For probability targets d/dt_c = -(1 - eps) w_c log p_c.
    """
    (target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator) = _prepare_cross_entropy(
        logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction
    )
    num_classes = log_probs.shape[-1]
    row_scale = reduction_scale(cotangent, reduction, counted.shape, denominator)
    row_scale = np.where(counted, row_scale, 0.0)
    probs = np.exp(log_probs)

    if target_kind == "index":
        smoothing = (label_smoothing / num_classes) * counted
        coefficient_sum = (1.0 - label_smoothing) * target_weight + smoothing * np.sum(class_weight)
        grad_logits = (coefficient_sum + 2.0 * z_loss * lse)[..., None] * probs
        grad_logits -= smoothing[..., None] * class_weight
        np.put_along_axis(
            grad_logits,
            safe_targets[..., None],
            _gather(grad_logits, safe_targets)[..., None] - (1.0 - label_smoothing) * target_weight[..., None],
            axis=-1,
        )
    else:
        probabilities = (1.0 - label_smoothing) * as_float64(targets) + label_smoothing / num_classes
        coefficients = probabilities * class_weight
        coefficient_sum = np.sum(coefficients, axis=-1)
        grad_logits = (coefficient_sum + 2.0 * z_loss * lse)[..., None] * probs - coefficients
    grad_logits = np.where(counted[..., None], grad_logits, 0.0) * row_scale[..., None]

    grads = {"logits": grad_logits}
    if target_kind == "probability":
        grads["targets"] = -(1.0 - label_smoothing) * class_weight * log_probs * row_scale[..., None]
    return grads


# Linear cross-entropy ---------------------------------------------------------


def _linear_logits(hidden, weight, targets, bias, ignore_index, label_smoothing, z_loss, reduction, chunk_size):
    """Validate linear_cross_entropy's arguments; return the float64 hidden states and logits hidden @ weight.T + bias.

    The hidden states of ignored tokens are replaced by zeros first, so inf or
    NaN there reaches neither the value nor any gradient.
    """
    validate_linear_cross_entropy(
        tensor_info("hidden", hidden),
        tensor_info("weight", weight),
        tensor_info("targets", targets),
        None if bias is None else tensor_info("bias", bias),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    counted = np.asarray(targets) != ignore_index
    hidden = np.where(counted[..., None], as_float64(hidden), 0.0)
    logits = hidden @ as_float64(weight).T
    return hidden, logits if bias is None else logits + as_float64(bias)


def linear_cross_entropy(
    hidden,
    weight,
    targets,
    *,
    bias=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size=None,
):
    """Cross-entropy of the logits hidden @ weight.T + bias: an LLM's output head and its loss in one call.

    The value is ``cross_entropy(hidden @ weight.T + bias, targets, ...)`` with
    the same options and conventions (integer targets only, no class weights).
    An ignored token contributes nothing to the value or to any gradient, even
    when its hidden state is inf or NaN: its row of the hidden gradient is 0,
    and it is left out of the weight and bias gradients.
    The spec forms the (..., V) logits in float64. The mirrors never hold them
    whole: they take the rows chunk_size tokens at a time.

    Args:
        hidden: floating array (..., H), one hidden state per token.
        weight: floating array (V, H), the output embedding, in hidden's dtype.
        targets: integer class ids of shape hidden.shape[:-1].
        bias: optional floating array (V,) in hidden's dtype.
        ignore_index, label_smoothing, z_loss, reduction: as in ``cross_entropy``.
        chunk_size: tokens per chunk in the mirrors, a positive int, or None for
            the mirror's default. It is validated here and never changes the value.

    Returns:
        float64 array: per-token losses of shape hidden.shape[:-1] for "none",
        else a 0-d array.
    """
    _, logits = _linear_logits(hidden, weight, targets, bias, ignore_index, label_smoothing, z_loss, reduction, chunk_size)
    return cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction)


def linear_cross_entropy_grad(
    hidden,
    weight,
    targets,
    *,
    bias=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size=None,
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * linear_cross_entropy(...)).

    With G the gradient of the cross-entropy with respect to the logits
    (``cross_entropy_grad``), flattened to (N, V), and X the hidden states
    flattened to (N, H) with the ignored tokens' rows set to 0: d/dhidden = G W
    (0 at ignored tokens, even when the weight holds NaN or inf),
    d/dweight = G^T X and d/dbias = the column sums of G. Keys: "hidden", "weight", and "bias" when a bias is given.
    """
    hidden, logits = _linear_logits(hidden, weight, targets, bias, ignore_index, label_smoothing, z_loss, reduction, chunk_size)
    grad_logits = cross_entropy_grad(
        logits,
        targets,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
        cotangent=cotangent,
    )["logits"]
    flat_grad = grad_logits.reshape(-1, grad_logits.shape[-1])
    # An ignored token's row of G is 0, but 0 times a NaN or infinite weight in G W
    # is NaN, so its hidden gradient is set to 0 after the product.
    counted = (np.asarray(targets) != ignore_index)[..., None]
    grads = {
        "hidden": np.where(counted, grad_logits @ as_float64(weight), 0.0),
        "weight": flat_grad.T @ hidden.reshape(-1, hidden.shape[-1]),
    }
    if bias is not None:
        grads["bias"] = flat_grad.sum(axis=0)
    return grads


# Token-level losses ---------------------------------------------------------


def _item_count_facts(num_items_in_batch):
    """Return (TensorInfo, value) of a NumPy num_items_in_batch, or (None, None) for a Python number or None."""
    if not isinstance(num_items_in_batch, (np.ndarray, np.generic)):
        return None, None
    info = tensor_info("num_items_in_batch", num_items_in_batch)
    concrete = float(num_items_in_batch) if info.is_integer and info.shape == () else None
    return info, concrete


def _prepare_causal_lm(logits, labels, ignore_index, shift, num_items_in_batch):
    """Validate the arguments and return the labels each position predicts and the denominator."""
    validate_causal_lm_cross_entropy(
        tensor_info("logits", logits), tensor_info("labels", labels), ignore_index=ignore_index, shift=shift
    )
    info, concrete = _item_count_facts(num_items_in_batch)
    validate_num_items_in_batch(num_items_in_batch, info, concrete)

    labels = np.asarray(labels).astype(np.int64)
    if shift:
        # Position t predicts labels[:, t + 1], and the last position predicts nothing.
        predicted = np.full_like(labels, ignore_index)
        predicted[:, :-1] = labels[:, 1:]
    else:
        predicted = labels
    counted = predicted != ignore_index
    counted_labels = predicted[counted]
    require_labels_in_range(
        int(counted_labels.min()) if counted_labels.size else None,
        int(counted_labels.max()) if counted_labels.size else None,
        np.shape(logits)[-1],
        ignore_index,
    )
    denominator = float(np.sum(counted)) if num_items_in_batch is None else float(num_items_in_batch)
    return predicted, denominator


def causal_lm_cross_entropy(logits, labels, *, ignore_index: int = -100, shift: bool = True, num_items_in_batch=None):
    r"""Token-level cross-entropy of a causal language model, summed over counted tokens and divided by a count.

    With z_bt the logits at position t of sequence b and y_bt the label that
    position predicts::

        loss = sum_{b,t counted} [lse(z_bt) - z_bt[y_bt]] / N
        y_bt = labels[b, t + 1] if shift else labels[b, t]

    A position is counted when its y_bt is not ignore_index. With shift, the
    last position of every sequence predicts nothing and is never counted.
    This is the labels-shifted-left-and-padded-with-ignore_index form of
    Hugging Face Transformers' ``ForCausalLMLoss`` (transformers/loss/loss_utils.py).

    Args:
        logits: floating array (B, T, V): batch, sequence, vocabulary.
        labels: integer array (B, T) of token ids in [0, V) or ignore_index.
            With shift, labels[:, 0] is never read or checked. Not
            differentiated.
        ignore_index: labels equal to this id are not counted (PyTorch's
            default -100). The logits of a position whose label is not
            counted affect neither the value nor the gradient, even when they
            are -inf or NaN.
        shift: True when labels are aligned with the input ids, as in
            Transformers, so that position t's logits predict the next token
            labels[:, t + 1]. False when labels are already aligned with the
            predictions.
        num_items_in_batch: N when given: the number of counted tokens summed
            over all micro-batches of one gradient-accumulation step (and over
            data-parallel ranks, if the step spans them). Then the micro-batch
            losses add up to the full-batch loss exactly. A Python int or float
            > 0, or a 0-d integer array (Transformers passes a tensor). None
            divides by this call's own count of counted tokens.

    Returns:
        float64 0-d array.

    Conventions of the spec:
        - With no counted token and no num_items_in_batch the loss is 0 with
          zero gradient (a mean of nothing, as in ``cross_entropy``).
          PyTorch's cross_entropy and Transformers return NaN there.
        - num_items_in_batch must count the tokens after the shift. Counting
          the unshifted labels, as Transformers' Trainer did before
          huggingface/transformers pull request 46204, adds one token for
          each sequence whose first label is not ignore_index and scales the
          loss down.
        - A num_items_in_batch below the local count is accepted, because a
          caller may divide by another count on purpose (the number of
          sequences, say).
    """
    predicted, denominator = _prepare_causal_lm(logits, labels, ignore_index, shift, num_items_in_batch)
    total = cross_entropy(logits, predicted, ignore_index=ignore_index, reduction="sum")
    return np.asarray(total / denominator if denominator > 0 else 0.0)


def causal_lm_cross_entropy_grad(
    logits, labels, *, ignore_index: int = -100, shift: bool = True, num_items_in_batch=None, cotangent=1.0
):
    """Return the gradient of cotangent * causal_lm_cross_entropy(...).

    d/dz_bt = (softmax(z_bt) - onehot(y_bt)) / N on counted positions, zero elsewhere.
    """
    predicted, denominator = _prepare_causal_lm(logits, labels, ignore_index, shift, num_items_in_batch)
    cotangent = as_float64(cotangent)
    scale = cotangent / denominator if denominator > 0 else np.zeros_like(cotangent)
    grads = cross_entropy_grad(logits, predicted, ignore_index=ignore_index, reduction="sum", cotangent=scale)
    return {"logits": grads["logits"]}


def _prepare_kl(log_predictions, targets, log_target, reduction):
    """Validate the arguments and return log q, p and log p in float64, with log p = 0 where p = 0."""
    validate_kl_divergence(
        tensor_info("log_predictions", log_predictions),
        tensor_info("targets", targets),
        log_target=log_target,
        reduction=reduction,
    )
    log_q = as_float64(log_predictions)
    values = as_float64(targets)
    if log_target:
        return log_q, np.exp(values), values
    if values.size:
        require_nonnegative_probabilities("targets", float(np.min(np.where(values < 0, values, 0.0))))
    log_p = np.log(np.where(values == 0, 1.0, values))
    return log_q, values, log_p


def kl_divergence(log_predictions, targets, *, log_target: bool = False, reduction: str = "batchmean"):
    r"""Kullback-Leibler divergence KL(p || q) of target distributions p from predicted distributions q, per row.

    For one row over C classes::

        KL(p || q) = sum_c p_c (log p_c - log q_c),   a term being 0 where p_c = 0 (0 log 0 = 0)

    The divergence is Kullback and Leibler's (1951). The argument order and
    names follow PyTorch's ``kl_div(input, target)`` and optax's
    ``kl_divergence(log_predictions, targets)``.

    Args:
        log_predictions: floating array (..., C) of log q, class axis last.
            -inf is allowed: it gives +inf where p_c > 0 and 0 where p_c = 0.
        targets: floating array of the same shape: the probabilities p, or
            log p when log_target. Not differentiated, as the teacher or
            reference distribution it usually is. Rows need not sum to 1, and
            each term is used as given. With log_target=False a negative
            probability raises ValueError (checked eagerly only in the mirrors).
            NaN is not rejected: it propagates to its row's KL.
        log_target: True when targets contains log p (-inf for p = 0), as PyTorch's
            ``log_target`` and optax's ``kl_divergence_with_log_targets``.
        reduction: "none" returns the per-row KL (shape log_predictions.shape[:-1]),
            "sum" adds the rows, and "batchmean" divides that sum by the number
            of rows, prod(shape[:-1]). The KL of an empty batch is 0 by the
            spec's convention. "mean" raises ValueError: PyTorch's element-wise
            "mean" divides by rows x classes, which is not a KL divergence
            (a warning in PyTorch's ``kl_div`` documentation states this too).

    Returns:
        float64 array: per-row KL, or a 0-d array for "sum" and "batchmean".

    Conventions of the spec:
        - A term with p_c = 0 is 0 even where log q_c = -inf. PyTorch's kl_div
          and optax's kl_divergence compute 0 * inf = NaN there. With
          log_target, PyTorch's kl_div and optax's
          kl_divergence_with_log_targets give NaN wherever log p_c = -inf.
        - "batchmean" divides by all rows. PyTorch's "batchmean" divides by
          the size of the first axis only, which differs for inputs of rank 1
          or of rank 3 and more.
    """
    log_q, p, log_p = _prepare_kl(log_predictions, targets, log_target, reduction)
    with np.errstate(invalid="ignore"):
        terms = np.where(p == 0, 0.0, p * (log_p - log_q))
    per_row = np.sum(terms, axis=-1)
    return reduce(per_row, "mean" if reduction == "batchmean" else reduction)


def kl_divergence_grad(log_predictions, targets, *, log_target: bool = False, reduction: str = "batchmean", cotangent=1.0):
    """Return the gradient of sum(cotangent * kl_divergence(...)).

    d/d log q_c = -p_c, scaled by the row's cotangent (divided by the row count
    for "batchmean"). It is finite, and 0 where p_c = 0, even where log q_c = -inf.
    """
    log_q, p, _ = _prepare_kl(log_predictions, targets, log_target, reduction)
    row_scale = reduction_scale(cotangent, "mean" if reduction == "batchmean" else reduction, log_q.shape[:-1])
    return {"log_predictions": -p * row_scale[..., None]}


def _prepare_bce(logits, targets, weight, pos_weight, reduction):
    """Validate the arguments and return x, y, the weight and the positive-class weight in float64, broadcast to x."""
    validate_binary_cross_entropy(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        None if pos_weight is None else tensor_info("pos_weight", pos_weight),
        reduction=reduction,
    )
    x = as_float64(logits)
    y = as_float64(targets)
    if y.size:
        require_probabilities_in_unit_interval(
            "targets", float(np.min(np.where(y < 0, y, 0.0))), float(np.max(np.where(y > 1, y, 1.0)))
        )
    scales = []
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is None:
            scales.append(np.ones_like(x))
            continue
        value = as_float64(value)
        require_nonnegative_finite(name, float(value.min()) if value.size else None, float(value.max()) if value.size else None)
        scales.append(np.broadcast_to(value, x.shape))
    return x, y, scales[0], scales[1]


def binary_cross_entropy_with_logits(logits, targets, *, weight=None, pos_weight=None, reduction: str = "mean"):
    r"""Binary cross-entropy on logits, with element weights and a positive-class weight.

    Per element, with logit x, target probability y, weight w and positive
    weight p, and sp(x) = log(1 + e^x) = -log sigma(-x)::

        loss = -w [p y log sigma(x) + (1 - y) log sigma(-x)]
             =  w [p y sp(-x) + (1 - y) sp(x)]

    Softplus keeps every term exact for logits of any finite size, up to the
    dtype's maximum: no exp of a large number and no cancellation.

    Args:
        logits: floating array of any shape.
        targets: floating array of the same shape, probabilities in [0, 1]
            (soft labels allowed). A value outside raises ValueError (checked
            eagerly only in the mirrors). NaN is not rejected: it propagates to
            its element's loss. Not differentiated.
        weight: optional floating array whose shape broadcasts to logits'
            shape: at most as many axes, each aligned from the last axis and of
            size 1 or equal to logits' size there. It multiplies each element's
            loss, as PyTorch's ``weight``. Non-negative and finite. Not
            differentiated.
        pos_weight: optional floating array with the same broadcasting rule,
            usually of shape (C,) for logits (..., C), so one weight per class
            applies along the last axis. This is PyTorch's documented rule for
            ``binary_cross_entropy_with_logits``: pos_weight is "broadcasted
            with target" and has "equal size along the class dimension to the
            number of classes", the last axis of (N, C) inputs.
            Non-negative and finite. Not differentiated.
        reduction: "none" (elementwise, logits' shape), "sum", or "mean" over all
            elements. As in PyTorch, the weights do not change the mean's
            denominator, which is the number of elements. The mean of an empty
            array is 0 by the spec's convention.

    Returns:
        float64 array: elementwise losses, or a 0-d array for "sum" and "mean".

    Conventions of the spec:
        - A term whose coefficient (p y, 1 - y or w) is 0 is 0, even where the
          logit is infinite, so x = +inf with y = 1 gives 0. The built-ins of
          PyTorch, TensorFlow and optax give NaN at some infinite logits.
        - "sum" and "mean" of losses near the dtype's maximum can overflow in
          the sum, like any sum.
    """
    x, y, w, p = _prepare_bce(logits, targets, weight, pos_weight, reduction)
    positive = p * y
    negative = 1.0 - y
    with np.errstate(invalid="ignore"):
        terms = np.where(positive == 0, 0.0, positive * softplus(-x)) + np.where(negative == 0, 0.0, negative * softplus(x))
        per_element = np.where(w == 0, 0.0, w * terms)
    return reduce(per_element, reduction)


def binary_cross_entropy_with_logits_grad(logits, targets, *, weight=None, pos_weight=None, reduction: str = "mean", cotangent=1.0):
    """Return the gradient of sum(cotangent * binary_cross_entropy_with_logits(...)).

    d/dx = w [(1 - y) sigma(x) - p y sigma(-x)], scaled by the cotangent (divided by
    the element count for "mean"). It is finite for every x, infinite ones included.
    """
    x, y, w, p = _prepare_bce(logits, targets, weight, pos_weight, reduction)
    scale = reduction_scale(cotangent, reduction, x.shape)
    return {"logits": w * ((1.0 - y) * sigmoid(x) - p * y * sigmoid(-x)) * scale}


def mse(predictions, targets, *, reduction: str = "mean"):
    """Mean squared error, (p - t)^2 per element with no 1/2 factor.

    Args:
        predictions: floating array of any shape.
        targets: floating array of exactly the same shape. A mismatch raises
            ValueError instead of broadcasting (PyTorch's ``mse_loss`` warns and
            broadcasts).
        reduction: "none" (elementwise), "sum", or "mean" over all elements. The
            mean of an empty array is 0 by the spec's convention (PyTorch: NaN).

    Returns:
        float64 array: elementwise losses, or a 0-d array for "sum" and "mean".
    """
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    difference = as_float64(predictions) - as_float64(targets)
    return reduce(difference**2, reduction)


def mse_grad(predictions, targets, *, reduction: str = "mean", cotangent=1.0):
    """Return the gradient of sum(cotangent * mse(...)): d/dp = 2 (p - t), d/dt = -2 (p - t), scaled."""
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    difference = as_float64(predictions) - as_float64(targets)
    scale = reduction_scale(cotangent, reduction, difference.shape)
    grad_predictions = 2.0 * difference * scale
    return {"predictions": grad_predictions, "targets": -grad_predictions}


register(
    LossSpec(
        name="cross_entropy",
        function=cross_entropy,
        gradient=cross_entropy_grad,
        tensor_args=("logits", "targets", "weight"),
        differentiable=("logits", "targets"),
        summary="softmax cross-entropy with class weights, ignore_index, label smoothing and z-loss",
    )
)
register(
    LossSpec(
        name="linear_cross_entropy",
        function=linear_cross_entropy,
        gradient=linear_cross_entropy_grad,
        tensor_args=("hidden", "weight", "targets", "bias"),
        differentiable=("hidden", "weight", "bias"),
        summary="cross-entropy of hidden @ weight.T + bias, computed by the mirrors in chunks of tokens",
    )
)
register(
    LossSpec(
        name="mse",
        function=mse,
        gradient=mse_grad,
        tensor_args=("predictions", "targets"),
        differentiable=("predictions", "targets"),
        summary="mean squared error with no 1/2 factor; mismatched shapes are an error",
    )
)
register(
    LossSpec(
        name="causal_lm_cross_entropy",
        function=causal_lm_cross_entropy,
        gradient=causal_lm_cross_entropy_grad,
        tensor_args=("logits", "labels"),
        differentiable=("logits",),
        summary="token-level LM cross-entropy over (B, T, V) with the next-token shift and num_items_in_batch",
    )
)
register(
    LossSpec(
        name="kl_divergence",
        function=kl_divergence,
        gradient=kl_divergence_grad,
        tensor_args=("log_predictions", "targets"),
        differentiable=("log_predictions",),
        summary="per-row KL(p || q) from log q, with 0 log 0 = 0, log-space targets and batchmean",
    )
)
register(
    LossSpec(
        name="binary_cross_entropy_with_logits",
        function=binary_cross_entropy_with_logits,
        gradient=binary_cross_entropy_with_logits_grad,
        tensor_args=("logits", "targets", "weight", "pos_weight"),
        differentiable=("logits",),
        summary="sigmoid binary cross-entropy via softplus, with element weights and pos_weight",
    )
)
