# auditq developer tasks. `make` alone lists them.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

# `make bench` sizes (defaults: about 10-15 minutes on a 2-core machine).
BENCH_OPS ?= 4000
BENCH_DB ?= both
BENCH_BACKLOG ?= 100000
BENCH_SECONDS ?= 60
BENCH_RATE ?= 500
BENCH_POOL ?= prefork
BENCH_TIMEOUT ?= 120
BENCH_CHILDREN ?= 10000
BENCH_EXPORT_ROWS ?= 10000000
BENCH_SCALE_ENTRIES ?= 50000000
SOAK_MINUTES ?= 10
SOAK_RATE ?= 10

.DEFAULT_GOAL := help
.PHONY: help venv demo lint test bench bench-export bench-scale soak clean distclean

help:
	@echo "auditq - make targets:"
	@echo "  make venv   create .venv and install auditq with its test extras (again when pyproject.toml changes)"
	@echo "  make demo   run the demo: migrate, admin/admin, worker, scripted changes, report, admin on :8000"
	@echo "              (SQLite + in-process broker by default; DATABASE_URL, REDIS_URL, DEMO_SERVE=0)"
	@echo "  make lint   ruff check, ruff format --check, mypy (django-stubs) on auditq/, and"
	@echo "              lint-imports (the layers, no cycles; contracts in pyproject.toml)"
	@echo "  make test   lint, then the test suite (tests/run.sh)"
	@echo "  make bench  install the bench extra, then bench/request_path.py (auditq vs django-auditlog,"
	@echo "              django-simple-history, django-pghistory), bench/worker.py (throughput, lag, memory)"
	@echo "              bench/counters.py (@counter_cache vs a synchronous F() update)"
	@echo "              bench/notify.py (concurrent commits: NOTIFY at each commit, when a relay waits, never)"
	@echo "              bench/dashboard.py (the admin dashboard's load time, target < 100 ms)"
	@echo "              and bench/verify.py (auditq_verify on 1M chained entries, target >= 1M/minute)"
	@echo "              (PostgreSQL at DATABASE_URL, Redis at REDIS_URL; sizes: BENCH_OPS=$(BENCH_OPS)"
	@echo "              BENCH_DB=$(BENCH_DB) BENCH_BACKLOG=$(BENCH_BACKLOG) BENCH_SECONDS=$(BENCH_SECONDS)"
	@echo "              BENCH_RATE=$(BENCH_RATE) BENCH_POOL=$(BENCH_POOL) BENCH_TIMEOUT=$(BENCH_TIMEOUT)"
	@echo "              BENCH_CHILDREN=$(BENCH_CHILDREN))"
	@echo "  make bench-export  bench/export.py: auditq_export and the admin's background export of"
	@echo "              BENCH_EXPORT_ROWS=$(BENCH_EXPORT_ROWS) entries (and a tenth of them): rows/s, peak RSS"
	@echo "              (not part of make bench or make test; about 5 GB of PostgreSQL, 40 minutes)"
	@echo "  make bench-scale  bench/scale.py: the admin pages and a month's prune on"
	@echo "              BENCH_SCALE_ENTRIES=$(BENCH_SCALE_ENTRIES) entries, partitioned by month and not"
	@echo "              (not part of make bench or make test; about 30 GB of PostgreSQL at a time, hours)"
	@echo "  make soak   bench/soak.py: $(SOAK_MINUTES) minutes of mixed writes at $(SOAK_RATE) transactions/s,"
	@echo "              a worker SIGKILLed every minute, Redis restarted twice; writes docs/soak.md"
	@echo "              (PostgreSQL at DATABASE_URL; not part of make test)"
	@echo "  make clean  remove the demo database, build files and caches"
	@echo "  make distclean  clean, and remove .venv too"

venv $(VENV): $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/python bench/request_path.py --ops $(BENCH_OPS) --db $(BENCH_DB)
	$(VENV)/bin/python bench/worker.py --backlog $(BENCH_BACKLOG) --seconds $(BENCH_SECONDS) \
		--rate $(BENCH_RATE) --pool $(BENCH_POOL) --timeout $(BENCH_TIMEOUT)
	$(VENV)/bin/python bench/counters.py --children $(BENCH_CHILDREN) --ops $(BENCH_OPS) \
		--timeout $(BENCH_TIMEOUT)
	$(VENV)/bin/python bench/notify.py
	$(VENV)/bin/python bench/dashboard.py
	$(VENV)/bin/python bench/verify.py

bench-export: $(BENCH_STAMP)
	$(VENV)/bin/python bench/export.py --rows $(BENCH_EXPORT_ROWS)

bench-scale: $(BENCH_STAMP)
	$(VENV)/bin/python bench/scale.py --entries $(BENCH_SCALE_ENTRIES)

soak: venv
	$(VENV)/bin/python bench/soak.py --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE)

demo: venv
	$(VENV)/bin/python manage.py demo

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: venv lint
	bash tests/run.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .coverage htmlcov staticfiles
	rm -f db.sqlite3 db.sqlite3-wal db.sqlite3-shm
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
