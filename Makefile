# make            set up .venv (first time only) and run the conformance suite on every backend,
#                 writing results/<environment-id>/, results/README.md and the README summary
# make test       set up .venv (first time only) and run the tests
# The stamp file makes a second set-up a no-op; edit pyproject.toml or constraints.txt to redo it.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.lossparity-installed
PIP := $(VENV)/bin/python -m pip

.PHONY: all conformance test clean

all: conformance

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -c constraints.txt setuptools wheel
	$(PIP) install --disable-pip-version-check -q -c constraints.txt --no-build-isolation -e '.[cpu,test,bench,subjects]'
	touch $(STAMP)

conformance: $(STAMP)
	$(VENV)/bin/lossparity run --backend all --publish

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV)
