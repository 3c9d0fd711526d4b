# Two commands do all the set-up: `make test` and `make demo` (each creates .venv on first use).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_output

.PHONY: venv test test-fast demo benchmark release-models clean

# torch>=2.14 / torchvision>=0.29 come from the registry (a CUDA build that also runs on the CPU).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

# the unit tests only (no training runs): about a minute
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/cellzoo demo --out $(DEMO_OUT)

# every bundle's label-efficiency study on the real tasks, each training run to its plateau, 3 seeds, with
# cellpose from scratch as the peer (installed beside .venv); writes docs/label_efficiency.md (hours on 2 cores; resumable)
benchmark: $(STAMP)
	bash scripts/install_cellpose_reference.sh
	$(BIN)/cellzoo benchmark label-efficiency --seeds 0,1,2 --out benchmark_output --docs docs/label_efficiency.md

# the weights every bundle ships (bundles/*/models, release.json); resumable
release-models: $(STAMP)
	$(BIN)/python scripts/train_release_models.py --work release_work

clean:
	rm -rf $(VENV) $(DEMO_OUT) benchmark_output release_work .pytest_cache
