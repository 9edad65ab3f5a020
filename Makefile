# Two commands on a fresh machine:  `make demo` (install + run the main job), `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/compare

.PHONY: venv data demo test test-slow test-oldest studies bench clean

# Exact pins for the project's own venv (the numbers in README.md and docs/ were measured with them);
# pyproject.toml states the supported range (torch >=2.11,<2.15).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
# The lower end of that range, for `make test-oldest`.
TORCH_OLDEST ?= torch==2.11.* torchvision==0.26.*

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test,export,ray]"

venv: $(PY)

# Debian's Fashion-MNIST (the default real data); skipped quietly where apt is not available.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else echo "note: install Fashion-MNIST with 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir/--download"; fi; \
	fi

# The main job: plain vs the default dual, 3 seeds (seed-paired CIs), Fashion-MNIST, 40k training
# images x 2 epochs (625 optimizer steps; plain ends near 89%), the whole 10k test set, bf16 where the
# CPU has native bf16 (auto), two single-thread runs side by side. Why these numbers: docs/train-and-compare.md.
DEMO_ARGS ?= --patterns none,dual --seeds 0,1,2 --epochs 2 --train-subset 40000 --test-subset 10000 \
	--precision auto --executor processes --workers 2 --cpus-per-run 1
demo: venv data
	$(VENV)/bin/resattn compare --out $(OUT) $(DEMO_ARGS)

test: venv data
	$(PY) -m pytest -q

test-slow: venv data
	$(PY) -m pytest -q -m slow

# The suite on the oldest supported torch (a second venv, .venv-oldest).
test-oldest: data
	$(MAKE) venv VENV=.venv-oldest TORCH_PIN="$(TORCH_OLDEST)"
	.venv-oldest/bin/python -m pytest -q

# Every shipped study at one budget as one grid (shared runs trained once; cpu: about 15 hours on
# 2 cores, far less with a GPU: add STUDY_ARGS="--device cuda --executor processes --workers 12"),
# then the page. A failing run is recorded in its study's report and the others go on.
BUDGET ?= cpu
STUDY_OUT ?= runs/studies
STUDY_ARGS ?=
studies: venv data
	-$(VENV)/bin/resattn study $(sort $(wildcard studies/*.yaml)) --budget $(BUDGET) --out $(STUDY_OUT) --no-progress $(STUDY_ARGS)
	$(VENV)/bin/resattn evidence $(STUDY_OUT)/*-$(BUDGET) --out docs/evidence.md

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
