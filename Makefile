# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.memsel-installed
TORCH  := torch==2.13.0
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=

.PHONY: install browser run test test-fast clean help

help:
	@echo "make run        set up .venv and run the quickstart pipeline ($(CONFIG))"
	@echo "make test       set up .venv and run the whole test suite"
	@echo "make test-fast  the tests not marked slow"
	@echo "make browser    install Debian's chromium for the report's browser test (as root; make test does it)"
	@echo "make clean      remove .venv and runs/"

# torch is installed first and pinned: that pin is the CPU wheel on these machines' disk, where an
# unpinned torch would pull a multi-GB CUDA build. constraints.txt pins every other package.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "memsel needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/memsel pipeline --config $(CONFIG)

# The report's browser test (tests/reporting/test_browser.py) drives Debian's Chromium through Playwright,
# which cannot download a browser on offline machines. As root, install it when it is missing; otherwise
# (or when apt fails) the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
	      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
	      || echo "make browser: could not install chromium; the browser test will be skipped"; \
	  else echo "make browser: no chromium and not root; the browser test will be skipped"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
