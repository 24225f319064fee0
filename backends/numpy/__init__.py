"""The NumPy backend: the spec itself, evaluated like any other implementation.

It runs the float64 spec on the rounded inputs and rounds the value and the
analytic gradient to the tested dtype. A correctly rounded result must pass
every tolerance, so this backend checks the harness and the tolerance policy
rather than a second implementation.
"""

from losses import bradley_terry_loss, cross_entropy, mse

__all__ = ["bradley_terry_loss", "cross_entropy", "mse"]


def implementations():
    """Return the spec functions as Implementation records of kind "reference"."""
    from losses import SPECS

    from .._api import Implementation

    return tuple(
        Implementation(loss=name, name="spec", kind="reference", function=spec.function, validates=True)
        for name, spec in SPECS.items()
    )
