# The README's commands. Each target installs what it needs into .venv first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo-real demo test test-fast bench bench-quick calibrate lint toy worlds venv system-tools clean

venv:
	@bash scripts/bootstrap.sh

system-tools:
	@bash scripts/install_system_tools.sh

## make demo: build (or reuse) the toy world and gate its four candidates through vLLM
demo: venv
	$(BIN)/gate demo

## make demo-real: the same on a real pretrained model (SmolLM2-135M from PyPI, two LoRA fine-tunes, real MMLU/ARC/HellaSwag/WinoGrande items)
demo-real: venv
	$(BIN)/gate demo --real --out gate-out/demo-real

## make test: the whole test suite (builds the worlds once per machine, starts real vLLM servers)
test: venv system-tools worlds
	$(BIN)/python -m pytest -q --durations=25

## make test-fast: the unit tests: no toy world, engine, browser, lm-eval run, torch model or child process (about a minute)
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not vllm and not browser and not heavy"

toy: venv
	$(BIN)/gate toy build

## make worlds: the toy world and the real world, built once per machine in the user cache ($$XDG_CACHE_HOME/gate)
worlds: toy
	$(BIN)/gate toy build --real

## make bench: every benchmark (about an hour on 2 cores), results recorded under bench/results/
bench: venv toy
	$(BIN)/python bench/run_all.py

## make bench-quick: a smoke run of every benchmark (one repeat, small sizes)
bench-quick: venv toy
	$(BIN)/python bench/run_all.py --quick

lint: venv
	$(BIN)/ruff check gate tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf .gate gate-out

## make calibrate: the Monte Carlo calibration at full precision (20,000 replications a binary cell; about 20 minutes), recorded to bench/results/calibration.json; run it before a change to the verdict code lands
calibrate: venv
	GATE_CALIBRATION=full GATE_CALIBRATION_OUT=bench/results/calibration.json \
	  $(BIN)/python -m pytest -q -p no:cacheprovider --durations=0 tests/verdict/test_calibration.py
