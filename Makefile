# brokergate — a thin list of named commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test` (the suite waits on servers and browsers a lot, so
# two workers on two cores finish sooner; TEST_WORKERS=0 runs it in one process)
TEST_WORKERS ?= 2
# Debian packages the tests drive as real clients (see README section "`make test`"):
#   pk12util/certutil (libnss3-tools), chromium + chromedriver, nginx (terminator mode), ab (bench),
#   sqlite3 and pg_dump/pg_restore (the tested backup and restore procedure, docs/operations.md),
#   haproxy (the tested L4 passthrough example, deploy/haproxy/haproxy.cfg), caddy (the tested
#   forward-auth front, deploy/caddy/Caddyfile), softhsm2 (a real
#   PKCS#11 token for the CA keys, tests/ca/test_pkcs11.py and make bench), the PostgreSQL
#   server binaries (the fault suite and the soak run a cluster of their own with initdb and
#   pg_ctl from /usr/lib/postgresql/*/bin, which are not on PATH: pg_ctlcluster, from the
#   server's postgresql-common, stands for them); curl, openssl and keytool are usually there
#   already and installed only when missing
SYSTEM_TOOLS := pk12util:libnss3-tools certutil:libnss3-tools chromium:chromium \
                chromedriver:chromium-driver nginx:nginx ab:apache2-utils \
                sqlite3:sqlite3 pg_dump:postgresql-client pg_restore:postgresql-client \
                pg_ctlcluster:postgresql \
                haproxy:haproxy caddy:caddy softhsm2-util:softhsm2 curl:curl openssl:openssl \
                keytool:default-jre-headless

.DEFAULT_GOAL := help
.PHONY: help install system-deps run test test-fast lint format bench clean

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install brokergate with its dev tools

system-deps: ## install the Debian packages the tests use as real clients (needs root or sudo)
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(STAMP) ## run everything locally: dev CA, demo upstream, mail sink, gateway on https://localhost:8443
	$(PY) -m brokergate dev run $(if $(OVERLAY),--overlay $(OVERLAY))

test: $(STAMP) system-deps ## run the whole test suite (SQLite; PostgreSQL when reachable), TEST_WORKERS=2 processes
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP) ## the suite without browser and slow tests
	$(PY) -m pytest -m "not browser and not slow"

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(STAMP) system-deps ## benchmarks: issuance (in-process, SoftHSM2, through the signer), reminder scan, gateway vs nginx, 10-min soak standalone and behind nginx
	$(PY) -m bench

clean: ## remove the venv, caches and generated dev files (keeps nothing in certs-dev/ or data/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data
	find certs-dev -mindepth 1 ! -name README.md -delete
