# auditq developer tasks. `make` alone lists them.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo lint test clean distclean

help:
	@echo "auditq - make targets:"
	@echo "  make venv   create .venv and install auditq with its test extras (again when pyproject.toml changes)"
	@echo "  make demo   run the demo: migrate, admin/admin, worker, scripted changes, report, admin on :8000"
	@echo "              (SQLite + in-process broker by default; DATABASE_URL, REDIS_URL, DEMO_SERVE=0)"
	@echo "  make lint   ruff check, ruff format --check and mypy (django-stubs) on auditq/"
	@echo "  make test   lint, then the test suite (tests/run.sh)"
	@echo "  make clean  remove the demo database, build files and caches"
	@echo "  make distclean  clean, and remove .venv too"

venv $(VENV): $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/python manage.py demo

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv lint
	bash tests/run.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .coverage htmlcov staticfiles
	rm -f db.sqlite3 db.sqlite3-wal db.sqlite3-shm
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
