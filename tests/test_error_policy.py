"""Every loss declares its bad-input cases and its NaN and infinity policy, and the spec follows both.

The spec's signature and cases decide which categories of bad input a loss
must cover. Each floating-point argument needs an integer-array case and each
keyword option an invalid value. Integer class targets need ids out of range,
lengths a negative value, and losses with several tensors mismatched shapes.
The losses that fix or bound the rank of an argument need a wrong rank.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np
import pytest

import losses
from conformance.cases import cases_for, error_cases_for
from conformance.cases._nonfinite import IGNORED_WHERE_MASKED, KINDS, POLICIES, RAISE, policy_of
from conformance.worker import Selection, Worker

LOSSES = sorted(losses.SPECS)

# Losses whose validator fixes the rank of an argument or requires a minimum rank.
# mse, binary_cross_entropy_with_logits, bradley_terry_loss, kl_penalty and the
# preference losses take any shape, only the same one for every argument.
RANKED = {
    "causal_lm_cross_entropy",
    "cross_entropy",
    "ctc_loss",
    "entropy_from_logits",
    "gae",
    "grpo_advantages",
    "kl_divergence",
    "linear_cross_entropy",
    "plackett_luce_loss",
    "ppo_policy_loss",
    "ranking_loss",
    "ranking_loss_pooled",
    "sequence_alignment_loss",
    "sequence_logps",
}
# Integer arguments that contain class ids, with the argument and axis whose size is the number of classes.
# linear_cross_entropy counts its classes on axis 0 of weight instead (see _class_count).
CLASS_ID_ARGS = {"targets": ("logits", -1), "labels": ("logits", -1), "alignment": ("scores", -1)}


def _policy(loss):
    return importlib.import_module(f"conformance.cases.{loss}").NONFINITE_POLICY


def _call_spec(loss, inputs, options):
    present = {name: array for name, array in inputs.items() if array is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return losses.SPECS[loss].function(**present, **options)


def _spec_error(loss, error_case):
    """Return the exception the spec raises on an error case, or None when it accepts the input."""
    inputs, options = error_case.build()
    try:
        _call_spec(loss, inputs, options)
    except Exception as error:  # The tests below check the type and the message.
        return error
    return None


def _args_of_kind(loss, kinds):
    """Return the tensor arguments that contain arrays of these dtype kinds in the loss's small and edge cases."""
    names = set()
    for case in cases_for(loss):
        if case.group not in ("small", "edge"):
            continue
        inputs, _ = case.generate(0)
        names.update(name for name, array in inputs.items() if array is not None and np.asarray(array).dtype.kind in kinds)
    return names


def _float_args(loss):
    return _args_of_kind(loss, "f")


def _class_count(loss, inputs):
    if loss == "linear_cross_entropy":
        return inputs["weight"].shape[0]
    for arg, (reference, axis) in CLASS_ID_ARGS.items():
        if arg in inputs and reference in inputs:
            return inputs[reference].shape[axis]
    raise AssertionError(f"{loss} has no argument that counts the classes")


@pytest.mark.parametrize("loss", LOSSES)
def test_policy_covers_float_args(loss):
    policy = _policy(loss)
    assert set(policy) == _float_args(loss), f"NONFINITE_POLICY of {loss} must name exactly its floating-point tensor arguments"
    for arg in policy:
        for kind in KINDS:
            assert policy_of(policy, arg, kind) in POLICIES, f"{loss}: unknown policy for {kind} in {arg}"


@pytest.mark.parametrize("loss", LOSSES)
def test_policy_has_cases(loss):
    policy = _policy(loss)
    cases = {case.name: case for case in cases_for(loss)}
    raised = [(error_case, error_case.build()[0]) for error_case in error_cases_for(loss)]
    for arg in policy:
        for kind, value in KINDS.items():
            rule = policy_of(policy, arg, kind)
            if rule == RAISE:
                poisoned = [
                    case.name
                    for case, inputs in raised
                    if arg in inputs and _holds(inputs[arg], value) and case.exception is ValueError
                ]
                assert poisoned, f"{loss}: {kind} in {arg} raises, but no ErrorCase puts {kind} there"
                continue
            names = [f"{kind}-in-{arg}"] + ([f"{kind}-in-masked-{arg}"] if rule == IGNORED_WHERE_MASKED else [])
            for name in names:
                assert name in cases, f"{loss}: no edge case {name!r} for the {rule!r} policy"
                assert cases[name].group == "edge"
                inputs, _ = cases[name].generate(0)
                assert _holds(inputs[arg], value), f"{loss}/{name}: {arg} does not contain {value}"


def _holds(array, value):
    array = np.asarray(array)
    if array.dtype.kind != "f":
        return False
    return bool(np.isnan(array).any()) if np.isnan(value) else bool((array == value).any())


@pytest.mark.parametrize("loss", LOSSES)
def test_spec_follows_policy(loss):
    policy = _policy(loss)
    cases = {case.name: case for case in cases_for(loss)}
    for arg in policy:
        if policy_of(policy, arg, "nan") != RAISE:
            inputs, options = cases[f"nan-in-{arg}"].generate(0)
            value = np.asarray(_call_spec(loss, inputs, options))
            assert np.isnan(value).any(), f"{loss}: NaN in a counted element of {arg} did not reach the value"
        for kind in KINDS:
            if policy_of(policy, arg, kind) != IGNORED_WHERE_MASKED:
                continue
            inputs, options = cases[f"{kind}-in-masked-{arg}"].generate(0)
            poisoned = np.asarray(_call_spec(loss, inputs, options))
            # The same inputs with the poisoned element set to 0 must give the same value.
            repaired = np.array(inputs[arg], copy=True)
            repaired[~np.isfinite(repaired)] = 0.0
            clean = np.asarray(_call_spec(loss, {**inputs, arg: repaired}, options))
            np.testing.assert_array_equal(poisoned, clean, err_msg=f"{loss}: {kind} in a masked element of {arg} changed the value")


@pytest.mark.parametrize("loss", LOSSES)
def test_integer_input_cases(loss):
    spec = losses.SPECS[loss]
    required = [name for name in spec.positional_args if name in _float_args(loss)]
    for arg in required:
        matching = [
            case.name
            for case in error_cases_for(loss)
            if case.exception is TypeError
            and arg in case.build()[0]
            and case.build()[0][arg] is not None
            and np.asarray(case.build()[0][arg]).dtype.kind in "iu"
        ]
        assert matching, f"{loss}: no ErrorCase passes an integer array as {arg}"


@pytest.mark.parametrize("loss", LOSSES)
def test_option_cases(loss):
    spec = losses.SPECS[loss]
    parameters = inspect.signature(spec.function).parameters.values()
    options = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in spec.tensor_args]
    covered = set()
    for case in error_cases_for(loss):
        covered.update(case.build()[1])
    for option in options:
        assert option in covered, f"{loss}: no ErrorCase passes an invalid {option}"
    if "reduction" in options:
        invalid = [case for case in error_cases_for(loss) if "reduction" in case.mentions and case.exception is ValueError]
        assert invalid, f"{loss}: no ErrorCase passes an unknown reduction"


@pytest.mark.parametrize("loss", LOSSES)
def test_class_id_cases(loss):
    class_args = [arg for arg in CLASS_ID_ARGS if arg in _args_of_kind(loss, "iu")]
    for arg in class_args:
        below, above = False, False
        for case in error_cases_for(loss):
            inputs, options = case.build()
            array = inputs.get(arg)
            if array is None or np.asarray(array).dtype.kind not in "iu" or case.exception is not ValueError:
                continue
            ignore_index = options.get("ignore_index", -100)
            counted = array[array != ignore_index]
            below = below or bool((counted < 0).any())
            above = above or bool((counted >= _class_count(loss, inputs)).any())
        assert below, f"{loss}: no ErrorCase puts a negative class id (other than ignore_index) in {arg}"
        assert above, f"{loss}: no ErrorCase puts a class id >= the number of classes in {arg}"


@pytest.mark.parametrize("loss", LOSSES)
def test_length_cases(loss):
    for arg in (name for name in losses.SPECS[loss].tensor_args if name.endswith("_lengths")):
        negative = [case.name for case in error_cases_for(loss) if arg in case.build()[0] and (case.build()[0][arg] < 0).any()]
        assert negative, f"{loss}: no ErrorCase puts a negative length in {arg}"


@pytest.mark.parametrize("loss", LOSSES)
def test_shape_and_rank_cases(loss):
    messages = [str(_spec_error(loss, case)) for case in error_cases_for(loss) if case.exception is ValueError]
    if len(losses.SPECS[loss].tensor_args) > 1:
        assert any("has shape" in message for message in messages), f"{loss}: no ErrorCase with mismatched shapes"
    if loss in RANKED:
        assert any("rank" in message for message in messages), f"{loss}: no ErrorCase with a wrong rank"


@pytest.mark.parametrize("loss", LOSSES)
def test_spec_raises_every_error_case(loss):
    selection = Selection(losses=(loss,), dtypes=("float32",), modes=("eager",), groups=("bad-input",))
    worker = Worker.load("numpy", selection)
    units = worker.plan()
    assert len(units) == len(error_cases_for(loss)), "the numpy backend must check every ErrorCase of the spec"
    for unit in units:
        record = worker.execute(unit)[0]
        assert record["status"] == "pass", f"{record['case']}: {record['detail']}"


def test_tensorflow_unknown_dimensions_named():
    # Traced with an input_signature that leaves dimensions open, a mirror raises a clear error, not int(None).
    tf = pytest.importorskip("tensorflow")
    from backends.tensorflow import implementations

    mirror = next(item.function for item in implementations() if item.loss == "cross_entropy" and item.kind == "mirror")
    signature = [tf.TensorSpec([None, 5], tf.float64), tf.TensorSpec([None], tf.int64)]
    traced = tf.function(mirror, input_signature=signature, autograph=False)
    with pytest.raises(ValueError) as raised:
        traced(tf.zeros((4, 5), tf.float64), tf.zeros(4, tf.int64))
    assert "logits has the shape (None, 5) under tf.function, with unknown dimensions" in str(raised.value)
