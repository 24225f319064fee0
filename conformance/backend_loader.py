"""Finding backend packages, their runtimes and their known failures."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from backends import BACKENDS, EXTRAS, FRAMEWORK_MODULES

# Extra backends as "name=module,name=module". The harness's own tests use this
# to run deliberately wrong or crashing implementations through the real runner.
EXTRA_BACKENDS_VARIABLE = "LOSSPARITY_EXTRA_BACKENDS"


def extra_backends() -> dict[str, str]:
    extras = {}
    for entry in os.environ.get(EXTRA_BACKENDS_VARIABLE, "").split(","):
        if entry.strip():
            name, _, module = entry.partition("=")
            extras[name.strip()] = module.strip()
    return extras


def known_backends() -> tuple[str, ...]:
    return BACKENDS + tuple(name for name in extra_backends() if name not in BACKENDS)


def module_path(backend: str) -> str:
    return extra_backends().get(backend, f"backends.{backend}")


def missing_framework(backend: str) -> str | None:
    """Return an install hint when the backend's framework is not importable, else None."""
    framework = FRAMEWORK_MODULES.get(backend)
    if framework is None or importlib.util.find_spec(framework) is not None:
        return None
    return f"{framework} is not installed; install it with the {EXTRAS[backend]} extra"


def load(backend: str, device: str):
    """Import a backend; return (its implementations, a Runtime on device)."""
    package = importlib.import_module(module_path(backend))
    runtime_module = importlib.import_module(f"{module_path(backend)}.runtime")
    return tuple(package.implementations()), runtime_module.Runtime(device)


@dataclass(frozen=True)
class KnownFailure:
    pattern: str
    kind: str  # "xfail" or "skip"
    reason: str
    link: str


def known_failures(backend: str) -> list[KnownFailure]:
    """Read known_failures.toml beside the backend package, if there is one."""
    spec = importlib.util.find_spec(module_path(backend))
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(list(spec.submodule_search_locations)[0]) / "known_failures.toml"
    if not path.exists():
        return []
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    entries = []
    for index, entry in enumerate(data.get("failure", [])):
        missing = [key for key in ("pattern", "kind", "reason", "link") if key not in entry]
        if missing or entry.get("kind") not in ("xfail", "skip"):
            raise ValueError(
                f"{path}: entry {index} is invalid; expected keys pattern, kind (xfail or skip), reason and link, "
                f"got {sorted(entry)}"
            )
        entries.append(KnownFailure(entry["pattern"], entry["kind"], entry["reason"], entry["link"]))
    return entries


def match_known(entries: list[KnownFailure], result_id: str) -> KnownFailure | None:
    for entry in entries:
        if fnmatch.fnmatchcase(result_id, entry.pattern):
            return entry
    return None
