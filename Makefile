# Respaldo: `make demo` starts everything, `make test` runs the whole suite.
# Both install what they need themselves into .venv (and, as root, the few Debian tools
# the tests drive: age, zstd, chromium).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: demo test lint format install system-deps clean-local bench bench-compare

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: install
	$(PY) manage.py demo

test: install system-deps
	$(PY) manage.py compilemessages -l es -v 0
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/check_structure.py
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/check_structure.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-local:
	rm -rf .local

# The benchmark (bench/README.md): SIZE = XS (CI's smoke run), S (default) or M. Needs a
# database like the rest (embedded, or DATABASE_URL), and the age and zstd CLIs.
SIZE ?= S
bench: install
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) manage.py migrate_schemas --shared -v 0
	$(PY) bench/run.py --size $(SIZE) $(BENCH_ARGS)

# make bench-compare A=bench/results/<one>.json B=bench/results/<other>.json
bench-compare:
	$(PY) bench/compare.py $(A) $(B)
