"""Third-party implementations checked as subjects: declarations for ``lossparity run`` and ``lossparity check``.

Each module declares, with ``conformance.plugin``, how a library's loss maps
onto a spec loss. The modules import their library only inside the adapters,
so the runner can read the declarations without it. They are registered in
pyproject.toml under the ``lossparity.implementations`` entry-point group.
"""
