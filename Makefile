# The two commands of README.md:
#   make main   set up (first time) and run the whole notebook series on the real sample (demo preset)
#               into runs/demo_flair, ending with runs/demo_flair/report.html
#   make main MODALITY=all   the series for t1, t1ce, t2 and flair (runs/demo_all/demo_<modality>/)
#               and the paper's Table 1 with four blocks (runs/demo_all/results_table1.md)
#   make test   set up (first time; Debian's chromium too, for the browser tests) and run the test suite
# Set-up creates .venv from requirements.txt (torch included) and installs amecam_lib into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.amecam-installed
PRESET ?= demo
MODALITY ?= flair
RUN ?= runs/$(PRESET)_$(MODALITY)
PYTEST_ARGS ?=

.PHONY: main test setup chromium clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

main: $(STAMP)
	$(PY) data_scripts/run_pipeline.py --preset $(PRESET) --modality $(MODALITY) --out $(RUN)

test: $(STAMP) chromium
	TQDM_DISABLE=1 $(PY) -m pytest -ra $(PYTEST_ARGS)

# The browser tests (tests/test_browser.py) drive Debian's chromium with playwright, which never
# downloads a browser here: install the Debian package when it is missing (root, or sudo).
chromium:
	@command -v chromium >/dev/null || { \
	    SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	    echo "installing Debian's chromium for the browser tests"; \
	    $$SUDO apt-get update && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

clean-runs:
	rm -rf runs/
