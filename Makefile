# make test: set up .venv if needed and run the whole suite (tests, docstrings, docs/).
# make demo: set up .venv if needed and run the main example end to end (no extras needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The tests also smoke-test examples/, which need the 'examples' extra (scikit-learn).
TEST_STAMP := $(VENV)/.installed-test-stamp

.PHONY: test demo golden orbax-fixtures bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,examples]'
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) examples/demo.py

# Re-record the Linen golden fixtures; needs flax, installed in its own venv only.
golden:
	test -x .flaxenv/bin/python || $(PYTHON) -m venv .flaxenv
	.flaxenv/bin/pip install --quiet flax==0.12.8 jax==0.10.2 jaxlib==0.10.2
	.flaxenv/bin/python tests/fixtures/make_golden.py

# Re-record the Orbax checkpoint fixtures: Flax writes, flaxlike writes the same values,
# then Flax restores flaxlike's and the verdict lands in tests/fixtures/orbax/.
orbax-fixtures: $(STAMP)
	test -x .flaxenv/bin/python || $(PYTHON) -m venv .flaxenv
	.flaxenv/bin/pip install --quiet flax==0.12.8 jax==0.10.2 jaxlib==0.10.2 orbax-checkpoint==0.12.8
	.flaxenv/bin/python tests/fixtures/make_orbax_fixtures.py flax-write
	$(PY) tests/fixtures/make_orbax_fixtures.py flaxlike-write
	.flaxenv/bin/python tests/fixtures/make_orbax_fixtures.py flax-read

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
