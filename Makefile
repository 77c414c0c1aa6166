# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_SECONDS ?= 120

.PHONY: install demo test test-all bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, alone: the CPU wheel. A bare `torch` requirement in a venv without it pulls a CUDA build.
	$(PIP) install -q torch==2.13.0 numpy
	$(PIP) install -q -e ".[dev]"
	# The C++ kernels compile now (1-2 min, once per cache), not inside the first command's time budget.
	$(VENV)/bin/nfkit build-kernels
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/nfkit build-kernels
	$(PY) assets/make_demo.py --out assets/demo
	$(VENV)/bin/nfkit fit assets/demo --out outputs/demo --max-seconds $(DEMO_SECONDS)

test: $(VENV)/.installed
	$(VENV)/bin/nfkit build-kernels
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.installed
	$(VENV)/bin/nfkit build-kernels
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/kernels.py
	$(PY) bench/fit_lego.py --res 100 --seconds 180

clean:
	rm -rf $(VENV) outputs assets/demo
