# make            set up .venv (first time only), run the conformance suite on every backend and the
#                 third-party subjects, the mpmath oracle and the vocabulary-parallel checks, writing
#                 results/<environment-id>/, results/README.md and the README summary
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

# Each step runs even when an earlier one reports failures; the exit status is 1 if any did.
# The main run goes last, so the results index and reliability.md it writes include the others.
conformance: $(STAMP)
	status=0; \
	$(VENV)/bin/lossparity oracle --publish || status=1; \
	$(VENV)/bin/lossparity run --world-size 1,2,4,8 --publish || status=1; \
	$(VENV)/bin/lossparity run --backend all --publish || status=1; \
	exit $$status

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV)
