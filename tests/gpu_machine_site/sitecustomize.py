"""Hide every installed package that the target GPU machine lacks, to test that the harness runs without them.

The GPU tier targets a machine with numpy, optax, mpmath, ml_dtypes, rich,
hypothesis, torch and jax with jaxlib, and what they require. Putting this folder on PYTHONPATH makes
Python import this file at start-up (the site module does). Every other
installed distribution's top-level modules (TensorFlow, Keras, matplotlib,
pytest, ...) are then not found, by import, by importlib.util.find_spec or by
importlib.metadata.
The project's own distribution, lossparity, stays importable without its extras.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys

AVAILABLE = ("numpy", "optax", "mpmath", "ml_dtypes", "rich", "hypothesis", "torch", "jax", "jaxlib", "lossparity")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _available_distributions() -> set[str]:
    """Return the names of AVAILABLE and of every distribution they require, extras left out."""
    seen: set[str] = set()
    pending = list(AVAILABLE)
    while pending:
        name = _normalize(pending.pop())
        if name in seen:
            continue
        try:
            requirements = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            pending.append(re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0])
    return seen


def _top_level_modules(distribution) -> set[str]:
    text = distribution.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for path in distribution.files or []:
        first = path.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".pth")) or first in ("..", "__pycache__"):
            continue
        names.add(first.removesuffix(".py") if len(path.parts) == 1 else first)
    return names


def _hidden() -> tuple[set[str], set[str]]:
    """Return the hidden top-level modules and the hidden distributions' normalized names."""
    available = _available_distributions()
    kept, hidden, distributions = set(), set(), set()
    for distribution in metadata.distributions():
        modules = _top_level_modules(distribution)
        name = _normalize(distribution.metadata["Name"] or "")
        if name in available:
            kept |= modules
        else:
            hidden |= modules
            distributions.add(name)
    return hidden - kept - {"losses", "backends", "conformance", "tests"}, distributions


class _HidingFinder:
    """Wrap one meta path finder so that it does not find the hidden modules.

    Returning None (rather than raising) keeps importlib.util.find_spec
    working: it returns None for a hidden module, as for a missing one.
    """

    def __init__(self, finder, hidden: set[str]):
        self.finder = finder
        self.hidden = hidden

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.hidden or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        # PyTorch checks importlib.metadata.version("optree") before importing
        # optree, so the metadata of a hidden distribution must be hidden too.
        find = getattr(self.finder, "find_distributions", None)
        if find is None:
            return iter(())
        return (item for item in find(*args, **kwargs) if _normalize(item.metadata["Name"] or "") not in HIDDEN_DISTRIBUTIONS)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


HIDDEN, HIDDEN_DISTRIBUTIONS = _hidden()
sys.meta_path[:] = [_HidingFinder(finder, HIDDEN) for finder in sys.meta_path]
