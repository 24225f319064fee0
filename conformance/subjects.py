"""Planning the worker processes of declared implementations (``lossparity check`` and third-party subjects).

Every backend a target declares implementations for gets one worker process,
with the environment its declarations ask for. The worker loads the target
again by name, so the declarations must be importable without the framework
work they describe (Keras, for example, is imported inside the adapters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import plugin


@dataclass(frozen=True)
class SubjectRun:
    """One worker: the declarations of ``target`` for ``backend``, reported under ``label``."""

    label: str
    target: str
    backend: str
    losses: tuple[str, ...]
    environment: dict = field(default_factory=dict)
    description: str = ""


def plan(target: str, *, loss: str | None = None, backend: str | None = None, selected_losses: tuple[str, ...] | None = None) -> list[SubjectRun]:
    """Group target's declarations by backend; raise plugin.PluginError when none is left to run.

    ``loss`` and ``backend`` describe an undecorated function. ``selected_losses``
    keeps only the declarations of those losses (None keeps all).
    """
    declarations = plugin.load(target, loss=loss, backend=backend)
    if backend is not None:
        declarations = [item for item in declarations if item.backend == backend]
    if selected_losses is not None:
        declarations = [item for item in declarations if item.loss in selected_losses]
    if not declarations:
        raise plugin.PluginError(f"{target} declares no implementation of the selected loss and backend")
    runs = []
    for framework in dict.fromkeys(item.backend for item in declarations):
        own = [item for item in declarations if item.backend == framework]
        environments = {tuple(sorted(item.environment.items())) for item in own}
        if len(environments) > 1:
            raise plugin.PluginError(f"{target}: the {framework} declarations ask for different environments {sorted(environments)}, but they run in one process")
        subjects = {item.subject for item in own}
        label = own[0].subject if len(subjects) == 1 and own[0].subject else framework
        runs.append(
            SubjectRun(
                label=label,
                target=target,
                backend=framework,
                losses=tuple(dict.fromkeys(item.loss for item in own)),
                environment=dict(own[0].environment),
                description=next((item.description for item in own if item.description), ""),
            )
        )
    return runs


def registered() -> list[str]:
    """Return the names of the entry points in the lossparity.implementations group, sorted."""
    return sorted(plugin.entry_points())
