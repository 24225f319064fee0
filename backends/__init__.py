"""Framework mirrors of the spec and adapters to each framework's built-in losses.

Backends are imported by name (``backends.torch``, ``backends.tensorflow``,
``backends.jax``, ``backends.numpy``); importing this package imports no
framework.
"""

BACKENDS = ("numpy", "torch", "tensorflow", "jax")

# The pip extra that installs each framework, named in "not installed" errors.
EXTRAS = {
    "numpy": "lossparity",
    "torch": "lossparity[cpu] (or lossparity[gpu])",
    "tensorflow": "lossparity[cpu] (or lossparity[gpu])",
    "jax": "lossparity[cpu] (or lossparity[gpu])",
}

# The module each backend needs, checked before the backend is imported.
FRAMEWORK_MODULES = {"numpy": "numpy", "torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}
