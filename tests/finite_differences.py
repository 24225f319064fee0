"""Float64 central differences, the independent check of every analytic gradient in the spec."""

import numpy as np

STEP = 1e-6


def objective(loss_fn, inputs, options, cotangent):
    """Return sum(cotangent * loss) as a Python float."""
    return float(np.sum(cotangent * loss_fn(**inputs, **options)))


def central_difference(loss_fn, inputs, name, options, cotangent, step=STEP):
    """Return the numerical gradient of sum(cotangent * loss) with respect to inputs[name]."""
    base = np.asarray(inputs[name], dtype=np.float64)
    gradient = np.zeros_like(base)
    for index in np.ndindex(base.shape):
        plus = base.copy()
        plus[index] += step
        upper = objective(loss_fn, {**inputs, name: plus}, options, cotangent)

        minus = base.copy()
        minus[index] -= step
        lower = objective(loss_fn, {**inputs, name: minus}, options, cotangent)

        gradient[index] = (upper - lower) / (2 * step)
    return gradient
