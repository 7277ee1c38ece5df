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

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile evaluation/Dockerfile
	# two processes: one pytest process that has loaded OpenVINO (tests/test_backends.py's OpenVINO test), then run a
	# torch DataLoader with worker processes (tests/test_train_data.py's loader tests), segfaults in its next
	# subprocess.run (tests/test_train_ddp.py; heap corruption, seen in malloc). Those 3 tests alone reproduce it;
	# no command of synthct loads OpenVINO and a DataLoader in one process. Root cause in OpenVINO/torch not found yet.
	$(PY) -m pytest -q --ignore-glob='tests/test_train_*.py'
	$(PY) -m pytest -q tests/test_train_*.py

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
