# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3.11
VENV ?= .venv
# spconv wheel: cpu (default) or a CUDA build, e.g. `make setup SPCONV=cu120`.
SPCONV ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nclr-installed
REQS := requirements/base.txt requirements/spconv-$(SPCONV).txt requirements/dev.txt \
        requirements/ros.txt setup.py

.PHONY: setup demo demo-seg test lint clean

setup: $(STAMP)

# Rebuilt when a requirements file or setup.py is newer than the last install.
$(STAMP): $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/base.txt -r requirements/spconv-$(SPCONV).txt \
		-r requirements/dev.txt
	$(PY) -c "import rclpy" 2>/dev/null || $(PY) -m pip install -q -r requirements/ros.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) training/demo.py

demo-seg: $(STAMP)
	$(PY) training/demo_seg.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
