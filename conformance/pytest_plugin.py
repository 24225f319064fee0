"""pytest plugin: the conformance cases of one backend as test items.

``pytest --backend jax`` (or LOSSPARITY_BACKEND=jax) runs, in the pytest
process, every case the CLI would run for that backend. A test that requests
the ``lossparity_unit`` fixture gets one item per unit. ``--backend all`` runs
every installed backend in the same process. The default is numpy, which
checks the harness itself and needs no framework.
"""

from __future__ import annotations

import os

import pytest

import losses

from . import backend_loader
from .dtypes import DTYPES
from .worker import Selection, Worker

_workers: dict[str, Worker] = {}


def pytest_addoption(parser):
    group = parser.getgroup("lossparity")
    group.addoption(
        "--backend",
        default=None,
        help="lossparity backend whose conformance cases to run: numpy, torch, tensorflow, jax or all "
        "(default: LOSSPARITY_BACKEND, else numpy)",
    )
    group.addoption("--lp-mode", default="eager,compiled", help="comma-separated modes for the conformance items")
    group.addoption("--lp-group", default="small,edge,realistic,bad-input", help="comma-separated case groups for the conformance items")
    group.addoption("--lp-dtype", default=",".join(DTYPES), help="comma-separated dtypes for the conformance items")


def selected_backends(config) -> list[str]:
    requested = config.getoption("--backend") or os.environ.get("LOSSPARITY_BACKEND") or "numpy"
    names = [name.strip() for name in requested.split(",") if name.strip()]
    known = backend_loader.known_backends()
    if "all" in names:
        return [name for name in ("numpy", "torch", "tensorflow", "jax") if not backend_loader.missing_framework(name)]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise pytest.UsageError(f"unknown lossparity backend {unknown}; expected one of: {', '.join(known)} or all")
    for name in names:
        hint = backend_loader.missing_framework(name)
        if hint:
            raise pytest.UsageError(f"lossparity backend {name!r} cannot run: {hint}")
    return names


def _option_list(config, option: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(value.strip() for value in config.getoption(option).split(",") if value.strip())
    unknown = [value for value in values if value not in valid]
    if unknown or not values:
        raise pytest.UsageError(f"{option} {config.getoption(option)!r} is invalid; expected a comma-separated list of: {', '.join(valid)}")
    return values


def _worker(backend: str, config) -> Worker:
    if backend not in _workers:
        selection = Selection(
            losses=tuple(losses.SPECS),
            dtypes=_option_list(config, "--lp-dtype", DTYPES),
            modes=_option_list(config, "--lp-mode", ("eager", "compiled")),
            groups=_option_list(config, "--lp-group", ("small", "edge", "realistic", "bad-input")),
        )
        _workers[backend] = Worker.load(backend, selection)
    return _workers[backend]


def pytest_generate_tests(metafunc):
    if "lossparity_unit" not in metafunc.fixturenames:
        return
    parameters = []
    for backend in selected_backends(metafunc.config):
        worker = _worker(backend, metafunc.config)
        for unit in worker.plan():
            parameters.append(pytest.param((backend, unit), id=f"{backend}/{unit.name}"))
    metafunc.parametrize("lossparity_unit", parameters)


def run_unit(backend_and_unit) -> list[dict]:
    """Execute one unit and turn its records into a pytest outcome."""
    backend, unit = backend_and_unit
    records = _workers[backend].execute(unit)
    unexpected = [record for record in records if record["status"] in ("fail", "error")]
    if unexpected:
        lines = [f"{record['check']}: {record['status']}: {record['detail']}" for record in unexpected]
        pytest.fail("\n".join(lines), pytrace=False)
    statuses = {record["status"] for record in records}
    if "xfail" in statuses:
        reason = next(record["known_failure"]["reason"] for record in records if record["status"] == "xfail")
        pytest.xfail(reason)
    if statuses <= {"unsupported", "skip"}:
        pytest.skip(records[0]["detail"])
    return records
