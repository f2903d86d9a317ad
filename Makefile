# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/latent_diffusion plugins/pixel_diffusion plugins/masked_transformer
STAMP := $(VENV)/.installed
# Tests and the demo never reach the Hub: every model is built or trained here.
export HF_HUB_OFFLINE := 1

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	# The review app's browser tests drive Debian's chromium (Playwright cannot download one).
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

install: $(STAMP)

# Style, format, and the types of the public plugin contract ([tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest workers, one thread each: much of the suite is single-threaded (imports, CLI
# subprocesses starting, servers answering), so two one-thread workers keep both cores busy
# (9:05 against 13:00 for one two-thread run). A test file stays on one worker, so its module
# fixtures are built once.
test: $(STAMP) lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile \
		--durations=15

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out runs/demo

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/synth_throughput.py
	$(BIN)/python bench/filter_throughput.py
	$(BIN)/python bench/review_latency.py

clean:
	rm -rf $(VENV) runs
