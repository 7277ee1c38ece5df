# synthct — the README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU wheel of PyTorch for dev/test machines; a plain `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml evaluation/requirements-dose.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[train,export,cpu,dev]"
	# dose extra: pyRadPlan + pymedphys without their declared deps (see evaluation/requirements-dose.txt)
	$(PY) -m pip install --quiet --no-deps -r evaluation/requirements-dose.txt
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile evaluation/Dockerfile

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile evaluation/Dockerfile
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m synthct.demo --out $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
