"""lossparity's reference spec: every loss in NumPy float64 with its analytic gradient."""

from ._registry import SPECS, LossSpec, register
from .classification import cross_entropy, cross_entropy_grad, mse, mse_grad
from .reward import bradley_terry_loss, bradley_terry_loss_grad

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
        name="bradley_terry_loss",
        function=bradley_terry_loss,
        gradient=bradley_terry_loss_grad,
        tensor_args=("chosen_rewards", "rejected_rewards", "margin"),
        differentiable=("chosen_rewards", "rejected_rewards"),
        summary="pairwise reward-model loss softplus(-(r_c - r_r - m)) with reward centering",
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

__all__ = [
    "SPECS",
    "LossSpec",
    "bradley_terry_loss",
    "bradley_terry_loss_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "mse",
    "mse_grad",
]
