"""Every saved fuzz counterexample replays as fixed or as a known failure, on every framework backend, in eager mode.

The counterexamples under conformance/cases/regressions were found by
``lossparity fuzz`` and shrunk; the conformance run replays them as the
"regression" group. A replay that fails names its case here, and a known failure that now
passes (xpass) fails the test until its entry is removed.
"""

from __future__ import annotations

import pytest

import losses
from conformance import backend_loader
from conformance.cases import REGRESSION_GROUP
from conformance.dtypes import DTYPES
from conformance.worker import UNEXPECTED, Selection, Worker


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow", "jax"])
def test_saved_counterexamples_fixed_or_known(backend):
    hint = backend_loader.missing_framework(backend)
    if hint:
        pytest.skip(hint)
    selection = Selection(losses=tuple(losses.SPECS), dtypes=DTYPES, modes=("eager",), groups=(REGRESSION_GROUP,))
    worker = Worker.load(backend, selection)
    units = worker.plan()
    assert units, "no saved counterexample was planned"
    records = [record for unit in units for record in worker.execute(unit)]
    unexpected = [f"{r['loss']}/{r['implementation']}/{r['dtype']}/{r['case']}/{r['check']}: {r['status']}: {r['detail'][:200]}" for r in records if r["status"] in UNEXPECTED]
    assert not unexpected, "\n".join(unexpected)
    passing_known = [f"{r['loss']}/{r['implementation']}/{r['dtype']}/{r['case']}/{r['check']}" for r in records if r["status"] == "xpass"]
    assert not passing_known, "known failures that now pass; remove their entries:\n" + "\n".join(passing_known)
