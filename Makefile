# make test: set up .venv if needed and run the whole suite (tests, docstrings, docs/).
# make demo: set up .venv if needed and run the main example end to end; it installs the
#   library and its 'examples' extra (matplotlib, tqdm, scikit-learn), no test tools.
# VENV=path selects another virtual environment (e.g. a throwaway one).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per install, so each target installs what it needs and nothing more; each is
# redone when pyproject.toml changes.
RUNTIME_STAMP := $(VENV)/.installed-runtime-stamp
EXAMPLES_STAMP := $(VENV)/.installed-examples-stamp
# The tests also smoke-test examples/, so they need the 'examples' extra too.
TEST_STAMP := $(VENV)/.installed-test-stamp
# The reference implementations, in a virtualenv of their own (the library and its tests
# never import them): Flax Linen with the Orbax it was released with, and Haiku for the
# trace-time table. Fixture scripts and benchmarks run there with PYTHONPATH=.
FLAXENV_STAMP := .flaxenv/.installed-stamp
REFERENCE_PACKAGES := flax==0.12.8 jax==0.10.2 jaxlib==0.10.2 orbax-checkpoint==0.12.8 \
	dm-haiku==0.0.17

.PHONY: test demo golden orbax-fixtures flax-suite bench bench-vs-linen clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(EXAMPLES_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[examples]'
	touch $(EXAMPLES_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,examples]'
	touch $(TEST_STAMP)

# One pytest worker per core (at most 4): the suite is mostly single-threaded tracing,
# so two workers on a 2-core machine take about 60% of the serial time.
test: $(TEST_STAMP)
	$(PY) -m pytest -n auto --maxprocesses=4

demo: $(EXAMPLES_STAMP)
	$(PY) examples/demo.py

$(FLAXENV_STAMP): Makefile
	test -x .flaxenv/bin/python || $(PYTHON) -m venv .flaxenv
	.flaxenv/bin/pip install --quiet $(REFERENCE_PACKAGES)
	touch $(FLAXENV_STAMP)

# Re-record the Linen golden fixtures; needs flax, installed in its own venv only.
golden: $(FLAXENV_STAMP)
	.flaxenv/bin/python tests/fixtures/make_golden.py

# Re-record the Orbax checkpoint fixtures: Flax writes, flaxlike writes the same values,
# then Flax restores flaxlike's and the verdict lands in tests/fixtures/orbax/.
orbax-fixtures: $(TEST_STAMP) $(FLAXENV_STAMP)
	.flaxenv/bin/python tests/fixtures/make_orbax_fixtures.py flax-write
	$(PY) tests/fixtures/make_orbax_fixtures.py flaxlike-write
	.flaxenv/bin/python tests/fixtures/make_orbax_fixtures.py flax-read

# Flax's own test suite (flax 0.12.8, unchanged) against this checkout, every `flax` import
# answered by flaxlike; needs the compatibility harness in ../shared/conformance and a git
# clone of google/flax (FLAX_MIRROR). Pass harness options with ARGS, e.g.
# make flax-suite ARGS="--files linen_module_test.py --json /tmp/suite.json"
flax-suite:
	../shared/conformance/run-flax-suite $(ARGS)

# The benchmarks need the library alone.
bench: $(RUNTIME_STAMP)
	$(PY) benchmarks/run.py

# The trace-time table side by side with flax.linen and Haiku, as in benchmarks/README.md.
bench-vs-linen: $(FLAXENV_STAMP)
	PYTHONPATH=. .flaxenv/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
