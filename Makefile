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

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

demo: $(STAMP)
	$(BIN)/python -m emu_cli.demo --out runs/demo

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/synth_throughput.py
	$(BIN)/python bench/filter_throughput.py
	$(BIN)/python bench/review_latency.py

clean:
	rm -rf $(VENV) runs
