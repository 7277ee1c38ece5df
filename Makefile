# synthct — the README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU wheel of PyTorch for dev/test machines; a plain `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: install test container-test lint demo clean

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
	$(PY) tools/typecheck.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile evaluation/Dockerfile
	# mypy over the installed synthct namespace ([tool.mypy]; the stage folders mapped as the wheel maps them)
	$(PY) tools/typecheck.py
	# one pytest process for the whole suite; it never forks a copy of itself (tests/fork_guard.py: forkserver as its
	# start method, a test that forks fails), so no child inherits the thread pools of runtimes loaded earlier.
	$(PY) -m pytest -q

# The Docker images built and run (tests marked `container`): needs root for the stand-in script (Docker + local
# python:3.11-slim* base images, no registry needed); without a daemon the tests skip and say how to enable them.
STAND_IN ?= ../shared/tools/docker-stand-in-base
container-test: $(STAMP)
	bash $(STAND_IN) || echo "warning: $(STAND_IN) failed (it needs root); tests without Docker will skip" >&2
	$(PY) -m pytest -q -m container

demo: $(STAMP)
	$(PY) -m synthct.demo --out $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
