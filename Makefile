# Two entry points for a fresh machine; each creates the virtual environment it needs.
#   make demo   - the main job on the embedded synthetic release
#   make test   - the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision must come as a matching pair: timm needs torchvision, and a mismatched
# torchvision breaks `import transformers` (see README, "Install").
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PAIR)
	$(BIN)/pip install -e '.[all,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/bioscan5m demo --workdir demo

# Two test workers on two cores: one BLAS/OpenMP thread each, or the workers oversubscribe the cores.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 tests

# Everything but the subprocess, torchrun, BLAST and browser tests (marked slow): for a quick loop while editing.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python bench/bench_dataset.py

clean:
	rm -rf $(VENV) demo .pytest_cache
