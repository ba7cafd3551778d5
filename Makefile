# zoo — two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build keeps CI light; on a GPU machine use e.g. `make TORCH=torch demo`.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test install gpu-test bench aot-check gpu-check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m zoo.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

gpu-test: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

# Compile every kernel config the launchers may pick for sm_80 and sm_90, no GPU needed (ptxas from the
# triton wheel); writes benchmarks/results/aot-check.{csv,md}. Triton's disk cache makes reruns fast.
aot-check: $(STAMP)
	env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 $(BIN)/python benchmarks/aot_check.py

# Everything that needs a GPU in <= 8 minutes (tests, kernel benchmark, a fit per family, FSDP2).
# Runs with .venv's Python if there is one, else the machine's own python3 (no install step: a GPU
# machine lent for minutes has torch, triton and lightning but no package registry).
GPU_PYTHON ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/kernel_bench.py

clean:
	rm -rf runs lightning_logs .zoo_cache .pytest_cache
