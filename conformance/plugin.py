"""Declaring an implementation of a spec loss so that ``lossparity check`` can test it.

A user's loss is any function that takes one framework's tensors. The
``implements`` decorator records, beside the function, which spec loss it
computes, which backend's tensors it takes and how the spec's arguments map to
its parameters::

    from conformance.plugin import implements

    @implements("cross_entropy", backend="torch", arguments={"logits": "input", "targets": "target"})
    def my_cross_entropy(input, target, reduction="mean"):
        ...

``lossparity check mypackage.losses:my_cross_entropy`` then runs every case of
``cross_entropy`` on it, with the tolerances and reports of the built-in
mirrors. The mapping rules:

- Each spec argument (tensor or option) is passed as the keyword named by
  ``arguments`` (default: the spec's own name). The name ``"*"`` of an argument
  passes it positionally, in the order of the spec's signature.
- A spec argument that the function does not accept is left out while the
  case gives it its spec default (or a value listed for it in ``supports``). A
  case that sets it otherwise is reported as not covered, not as a failure.
- ``unsupported`` names arguments the function accepts but does not handle
  like the spec. A case that sets them to a non-default value is not covered.
- ``supports`` limits an option to some values, for example
  ``{"reduction": ("mean",)}``.

``IMPL`` on the command line is ``package.module:attribute`` or the name of an
entry point in the ``lossparity.implementations`` group. The attribute (or the
entry point's target) is a decorated function, a ``Declaration``, a list of
them, or a function without arguments that returns such a list. A plain
undecorated function also works when ``--loss`` and ``--backend`` name its loss
and framework; it must then take the spec's argument names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

import losses
from backends._api import Difference, Implementation

ENTRY_POINT_GROUP = "lossparity.implementations"
# The backends whose runtimes call a declared function and differentiate it.
FRAMEWORKS = ("torch", "tensorflow", "jax")
POSITIONAL = "*"
_ATTRIBUTE = "__lossparity__"

__all__ = ["Declaration", "Difference", "KnownFailure", "implements", "declare", "load", "PluginError"]


class PluginError(ValueError):
    """An implementation could not be loaded or its declaration is invalid."""


@dataclass(frozen=True)
class KnownFailure:
    """A disagreement of a declared implementation with the spec, reported as xfail with its reason and link.

    ``pattern`` is matched with fnmatch against the result id
    ``loss/implementation/dtype/mode/case/check``.
    """

    pattern: str
    reason: str
    link: str


@dataclass(frozen=True)
class Declaration:
    """The facts ``lossparity check`` needs about one implementation of one spec loss.

    ``environment`` contains variables the worker process must have before the
    implementation's module is imported (Keras reads ``KERAS_BACKEND`` at
    import). ``requires`` names modules without which the implementation
    cannot run; a missing one makes the run report the implementation as not
    installed. ``validates`` promises the spec's exceptions and messages for
    bad input, so the bad-input cases are run too. ``modes`` limits the modes,
    with the reason in ``notes``. ``subject`` groups implementations that run in
    one worker and get one section of the report (for example ``keras-jax``).
    ``values`` renames option values, for example ``{"reduction": {"mean":
    "sum_over_batch_size", "none": None}}``. ``convert`` maps a spec argument to a
    function applied to its tensor before the call (a layout change such as
    moving the class axis), and ``output`` is applied to the function's result.
    """

    loss: str
    backend: str
    function: Callable
    name: str = ""
    arguments: Mapping[str, str] = field(default_factory=dict)
    unsupported: tuple[str, ...] = ()
    supports: Mapping[str, tuple] = field(default_factory=dict)
    differences: tuple[Difference, ...] = ()
    known_failures: tuple[KnownFailure, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    validates: bool = False
    modes: tuple[str, ...] = ("eager", "compiled")
    notes: str = ""
    subject: str = ""
    description: str = ""
    values: Mapping[str, Mapping] = field(default_factory=dict)
    convert: Mapping[str, Callable] = field(default_factory=dict)
    output: Callable | None = None


def implements(loss: str, *, backend: str, **details) -> Callable[[Callable], Callable]:
    """Attach a Declaration to a function; ``details`` are the Declaration's other fields."""

    def decorate(function: Callable) -> Callable:
        setattr(function, _ATTRIBUTE, declare(function, loss=loss, backend=backend, **details))
        return function

    return decorate


def declare(function: Callable, *, loss: str, backend: str, **details) -> Declaration:
    """Build and check the Declaration of function, raising PluginError when it is invalid."""
    if not details.get("name"):
        details["name"] = f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"
    declaration = Declaration(loss=loss, backend=backend, function=function, **details)
    _check(declaration)
    return declaration


def _check(declaration: Declaration) -> None:
    name = declaration.name
    if declaration.loss not in losses.SPECS:
        raise PluginError(f"{name}: loss {declaration.loss!r} is not a spec loss; expected one of: {', '.join(losses.SPECS)}")
    if declaration.backend not in FRAMEWORKS:
        hint = " (the numpy backend evaluates the spec itself and has no automatic differentiation to check a function's gradient with)" if declaration.backend == "numpy" else ""
        raise PluginError(f"{name}: backend {declaration.backend!r} is unknown{hint}; expected one of: {', '.join(FRAMEWORKS)}")
    if not callable(declaration.function):
        raise PluginError(f"{name}: function is {type(declaration.function).__name__}, not a callable")
    parameters = spec_parameters(declaration.loss)
    for label, names in (("arguments", declaration.arguments), ("unsupported", declaration.unsupported), ("supports", declaration.supports)):
        unknown = [item for item in names if item not in parameters]
        if unknown:
            raise PluginError(
                f"{name}: {label} names {', '.join(map(repr, unknown))}, which the spec {declaration.loss} does not take; "
                f"expected some of: {', '.join(parameters)}"
            )

    for option, allowed in declaration.supports.items():
        if isinstance(allowed, (str, bytes)) or not isinstance(allowed, (tuple, list, set, frozenset)):
            raise PluginError(f"{name}: supports[{option!r}] is {allowed!r}; expected a tuple of values, for example ({allowed!r},)")
    targets = [target for target in declaration.arguments.values() if target != POSITIONAL]
    repeated = sorted({target for target in targets if targets.count(target) > 1})
    if repeated:
        raise PluginError(f"{name}: arguments maps several spec arguments to {', '.join(map(repr, repeated))}; expected one parameter per spec argument")

    accepted = _accepted_parameters(declaration.function)
    if accepted is not None:
        unknown_targets = {spec_name: target for spec_name, target in declaration.arguments.items() if target != POSITIONAL and target not in accepted}
        if unknown_targets:
            spec_name, target = next(iter(unknown_targets.items()))
            raise PluginError(
                f"{name}: arguments maps {spec_name} to {target!r}, which the function does not take; "
                f"expected one of its parameters: {', '.join(sorted(accepted)) or 'none'}, or '*' to pass it positionally"
            )
    for label, names in (("values", declaration.values), ("convert", declaration.convert)):
        unknown = [item for item in names if item not in parameters]
        if unknown:
            raise PluginError(f"{name}: {label} names {', '.join(map(repr, unknown))}, which the spec {declaration.loss} does not take")
    bad_modes = [mode for mode in declaration.modes if mode not in ("eager", "compiled")]
    if bad_modes or not declaration.modes:
        raise PluginError(f"{name}: modes is {declaration.modes!r}; expected a non-empty tuple of 'eager' and 'compiled'")


def spec_parameters(loss: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(losses.SPECS[loss].function).parameters)


# Loading ------------------------------------------------------------------


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load(target: str, *, loss: str | None = None, backend: str | None = None) -> list[Declaration]:
    """Resolve IMPL (``module:attribute`` or an entry-point name) to its Declarations.

    ``loss`` and ``backend`` describe an undecorated function. A single
    declaration whose backend differs from ``backend`` raises PluginError.
    """
    obtained = _resolve(target)
    if callable(obtained) and not hasattr(obtained, _ATTRIBUTE) and not isinstance(obtained, Declaration) and _takes_no_arguments(obtained):
        obtained = obtained()  # A factory of declarations.
    items = list(obtained) if isinstance(obtained, (list, tuple)) else [obtained]
    declarations = []
    for item in items:
        if isinstance(item, Declaration):
            _check(item)
            declarations.append(item)
        elif callable(item) and hasattr(item, _ATTRIBUTE):
            declarations.append(getattr(item, _ATTRIBUTE))
        elif callable(item):
            if loss is None or backend is None:
                raise PluginError(
                    f"{target} is a function without a lossparity declaration, so --loss and --backend must say which "
                    f"spec loss it computes and which framework's tensors it takes (or decorate it with conformance.plugin.implements)"
                )
            declarations.append(declare(item, loss=loss, backend=backend, name=target))
        else:
            raise PluginError(f"{target} is {type(item).__name__}; expected a function, a Declaration or a list of them")
    if not declarations:
        raise PluginError(f"{target} declares no implementation")
    for declaration in declarations:
        if backend is not None and declaration.backend != backend and len(declarations) == 1:
            raise PluginError(f"--backend {backend} disagrees with {declaration.name}, which declares backend {declaration.backend!r}")
    return declarations


def _resolve(target: str):
    module_name, colon, attribute = target.partition(":")
    if not colon:
        found = entry_points().get(target)
        if found is None:
            registered = ", ".join(sorted(entry_points())) or "none"
            raise PluginError(
                f"implementation {target!r} is neither package.module:function nor a registered entry point of the "
                f"{ENTRY_POINT_GROUP} group (registered: {registered})"
            )
        try:
            return found.load()
        except Exception as error:  # The user's module may fail in any way, so the error names the entry point.
            raise PluginError(f"entry point {target!r} ({found.value}) failed to load: {type(error).__name__}: {error}") from error
    if not module_name or not attribute:
        raise PluginError(f"implementation {target!r} is invalid; expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PluginError(f"module {module_name!r} of {target!r} was not found ({error}); is it on PYTHONPATH or installed?") from error
    except Exception as error:  # Importing user code can raise anything; report it with the target.
        raise PluginError(f"importing {module_name!r} for {target!r} failed: {type(error).__name__}: {error}") from error
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise PluginError(f"{module_name!r} has no attribute {attribute!r} (from {target!r})")
        value = getattr(value, part)
    return value


def _takes_no_arguments(function: Callable) -> bool:
    try:
        return not inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def missing_requirement(declaration: Declaration) -> str | None:
    """Return an install hint when a module the declaration requires is not importable, else None."""
    for module in declaration.requires:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (needed by {declaration.name}); install it, for example with the lossparity[subjects] extra"
    return None


# Adapting -----------------------------------------------------------------


def implementation(declaration: Declaration) -> Implementation:
    """Wrap a declaration as an Implementation that the harness calls with the spec's signature."""
    parameters = spec_parameters(declaration.loss)
    accepted = _accepted_parameters(declaration.function)
    spec_order = list(parameters)
    tensor_names = set(losses.SPECS[declaration.loss].tensor_args)

    def target_name(spec_name: str) -> str:
        return declaration.arguments.get(spec_name, spec_name)

    def accepts(spec_name: str) -> bool:
        target = target_name(spec_name)
        return target == POSITIONAL or accepted is None or target in accepted

    def unsupported(inputs, options) -> str | None:
        for spec_name, parameter in parameters.items():
            if spec_name in tensor_names:
                given = inputs.get(spec_name)
                is_default = given is None
            else:
                given = options.get(spec_name, parameter.default)
                is_default = _same(given, parameter.default)
            if spec_name in declaration.supports:
                if not any(_same(given, value) for value in declaration.supports[spec_name]):
                    return f"{declaration.name} supports {spec_name} in {tuple(declaration.supports[spec_name])}, not {given!r}"
            elif is_default:
                continue
            elif spec_name in declaration.unsupported:
                return f"{declaration.name} does not support {spec_name} (declared unsupported)"
            elif not accepts(spec_name):
                return f"{declaration.name} takes no {spec_name} argument"
        return None

    positional_only = _positional_only(declaration.function)

    def call(*positional, **keywords):
        values = dict(zip(spec_order, positional))
        values.update(keywords)
        args, kwargs, by_position = [], {}, {}
        for spec_name in spec_order:
            if spec_name not in values or not accepts(spec_name):
                continue
            value = values[spec_name]
            if spec_name in declaration.values and _hashable(value) and value in declaration.values[spec_name]:
                value = declaration.values[spec_name][value]
            if spec_name in declaration.convert and value is not None:
                value = declaration.convert[spec_name](value)
            target = target_name(spec_name)
            if target == POSITIONAL:
                args.append(value)
            elif target in positional_only:
                by_position[target] = value
            else:
                kwargs[target] = value
        # Positional-only parameters go first, in the function's order.
        leading = [by_position[name] for name in positional_only if name in by_position]
        result = declaration.function(*leading, *args, **kwargs)
        return result if declaration.output is None else declaration.output(result)

    return Implementation(
        loss=declaration.loss,
        name=declaration.name,
        kind="subject",
        function=call,
        unsupported=unsupported,
        differences=declaration.differences,
        notes=declaration.notes,
        validates=declaration.validates,
        modes=tuple(declaration.modes),
    )


def _accepted_parameters(function: Callable) -> set[str] | None:
    """Return the keyword names function accepts, or None when it takes **kwargs (any name)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters if parameter.kind is not parameter.VAR_POSITIONAL}


def _positional_only(function: Callable) -> list[str]:
    """Return the names of function's positional-only parameters, in order."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [parameter.name for parameter in parameters if parameter.kind is parameter.POSITIONAL_ONLY]


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
