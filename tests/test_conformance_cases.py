"""The conformance cases of the selected backend (--backend or LOSSPARITY_BACKEND) as test items."""

from conformance.pytest_plugin import run_unit


def test_conformance(lossparity_unit):
    records = run_unit(lossparity_unit)
    assert records, "the unit produced no result"
