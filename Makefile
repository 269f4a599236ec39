# Everyday actions. Each target sets up .venv first, so on a fresh machine one command does all.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned as a pair: timm needs a torchvision built for the same torch.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast lint bench-cpu study-cpu analyses clean

# torch's CUDA build (it runs on the CPU too) and its libraries fill about 6.5 GiB: say so up front
# rather than leave a bare "No space left on device" from pip.
$(BIN)/bench: pyproject.toml
	@free=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); \
	  [ "$$free" -ge 7 ] || echo "setup: $$free GiB free on this disk; the venv needs about 6.5 GiB" >&2
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip
	$(BIN)/pip install -q --no-cache-dir $(TORCH)
	$(BIN)/pip install -q --no-cache-dir -e '.[dev,slurm]'
	touch $@

setup: $(BIN)/bench

# The smoke study on scikit-learn's digits: grid -> records -> fits, figures, report.
demo: setup
	WANDB_MODE=offline $(BIN)/bench study sweeps/smoke.yaml

# .venv/bin on PATH: tests run the `bench` and `wandb` commands as a user would
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check bench tests benchmarks
	$(BIN)/ruff format --check bench tests benchmarks

bench-cpu: setup
	$(BIN)/python benchmarks/throughput.py --device=cpu --quick

study-cpu: setup
	$(BIN)/bench study sweeps/cifar10-cpu.yaml

# Every committed study's fits, figures and report again from its records (under half a minute a
# study on 2 cores), the tuning grids' tables, then the positive controls beside their baseline,
# the ResNet at AdamW 1e-3 (docs/figures/controls_gap.png) and at its tuned 3e-2
# (docs/figures/controls_gap_tuned.png).
STUDIES := cifar10-gpu cifar10-cpu cifar10-cpu-plain cifar10-cpu-permuted cifar10-cpu-scrambled \
  cifar10-cpu-plain-tuned-resnet cifar10-cpu-permuted-tuned-resnet cifar10-cpu-scrambled-tuned-resnet
TUNING := cifar10-cpu-lr cifar10-cpu-recipe
CONTROL_LABELS := unchanged,tiles shuffled,tiles and pixels shuffled
CONTROLS := results/cifar10-cpu-plain results/cifar10-cpu-permuted results/cifar10-cpu-scrambled
TUNED_LABELS := unchanged (ResNet at 3e-2),tiles shuffled (ResNet at 3e-2),tiles and pixels shuffled (ResNet at 3e-2)
TUNED := results/cifar10-cpu-plain-tuned-resnet results/cifar10-cpu-permuted-tuned-resnet \
  results/cifar10-cpu-scrambled-tuned-resnet

analyses: setup
	for s in $(STUDIES); do $(BIN)/bench analyze results/$$s || exit 1; done
	for s in $(TUNING); do $(BIN)/bench tune results/$$s > /dev/null || exit 1; done
	$(BIN)/bench compare $(CONTROLS) --labels "$(CONTROL_LABELS)" \
	  --out docs/figures/controls_gap.png
	$(BIN)/bench compare $(TUNED) --labels "$(TUNED_LABELS)" \
	  --out docs/figures/controls_gap_tuned.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
