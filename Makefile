# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The application installs from a lock (exact versions, hashes) of the runtime and every
# extra below; `make lock` regenerates it. The library itself keeps ranges in pyproject.toml.
EXTRAS := dashboard,redis,postgres,dev,bench
LOCK := deploy/requirements.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install secret-key lock check-lock system-deps run test test-library test-postgres lint bench clean

install: $(STAMP)

# Exactly the lock: pinned and hash-checked (pip and setuptools included), then pip-sync
# removes whatever the lock does not list, then the project itself (editable, no deps).
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/pip-sync --quiet $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m tests.lockfile installed
	rm -f $(VENV)/.installed-* && touch $@

# SECRET_KEY for this checkout: unless the SECRET_KEY variable is set, a random key written
# once to SECRET_KEY_FILE (.secret_key, mode 0600). Importing the settings never writes it;
# Django (and so mypy's Django plugin) does not start without a key.
secret-key: install
	@$(PY) -m dashboard.secret_key

# Resolve the newest versions pyproject.toml allows, with hashes, into the lock. Then run
# `make test` and commit both files (README: "Upgrading dependencies"). `make lock
# LOCK_UPGRADE=` keeps the current pins where pyproject.toml still allows them.
LOCK_UPGRADE ?= --upgrade
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/pip-compile || $(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet $(LOCK_UPGRADE) --extra $(EXTRAS) --all-build-deps \
	  --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file $(LOCK) pyproject.toml
	$(PYTHON) -m tests.lockfile stamp

# Fails, saying what to run, when pyproject.toml's dependencies changed after the last `make lock`.
check-lock:
	@$(PYTHON) -m tests.lockfile check

# Debian packages the tests need (a real browser, Redis, PostgreSQL, Prometheus and promtool);
# installed with apt-get when running as root. Tests that need one fail in CI (CI=true) when
# it is missing.
SYSTEM_PACKAGES := chromium redis-server postgresql prometheus
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "not root: cannot install$$missing (tests that need them will say so)"; fi; \
	fi

# The server (uvicorn with uvloop and httptools: `make bench BENCH=http` measured it ahead
# of daphne) plus one worker process per name in AGENTS (`manage.py run_agents`: simulated
# agents and the workflow workload, whose breakers live only in that process and report
# over HTTP; the Fleet page shows and steers them, the Simulation page breaks their
# services). The server runs no workload itself (RESILIENCE_DEMO=0) unless AGENTS= runs no
# worker; retention keeps the demo's checkpoints an hour. With REDIS_URL set (cluster mode): two
# servers, on PORT and PORT+1, sharing breakers, limiters and live updates through Redis
# (and the database). Ctrl-C stops them all.
AGENTS ?= planner tools
run: install secret-key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_demo_admin
	@export RESILIENCE_DEMO=$${RESILIENCE_DEMO:-$(if $(strip $(AGENTS)),0,1)} \
	  CHECKPOINT_MAX_AGE=$${CHECKPOINT_MAX_AGE:-1h}; \
	serve() { exec $(PY) -m uvicorn --host $(HOST) --port "$$1" --loop uvloop --http httptools \
	  --ws websockets --lifespan on --no-proxy-headers --no-access-log dashboard.asgi:application; }; \
	pids=""; \
	trap 'trap - INT TERM EXIT; kill $$pids 2>/dev/null; wait $$pids' INT TERM EXIT; \
	if [ -z "$$REDIS_URL" ]; then \
	  echo "Serving on http://$(HOST):$(PORT)/ (log in with the demo admin)"; \
	  serve $(PORT) & pids="$$!"; \
	else \
	  second=$$(( $(PORT) + 1 )); \
	  echo "Cluster mode (REDIS_URL=$$REDIS_URL): serving on http://$(HOST):$(PORT)/ and" \
	    "http://$(HOST):$$second/ as one system (log in with the demo admin)"; \
	  serve $(PORT) & pids="$$!"; \
	  serve $$second & pids="$$pids $$!"; \
	fi; \
	for agent in $(AGENTS); do \
	  $(PY) manage.py run_agents --service "$$agent" --url "http://$(HOST):$(PORT)" & pids="$$pids $$!"; \
	done; \
	[ -z "$(AGENTS)" ] || echo "Agent workers ($(AGENTS)) report to the Fleet page: http://$(HOST):$(PORT)/fleet/ (Ctrl-C stops all)"; \
	wait -n $$pids

lint: check-lock install secret-key
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint system-deps
	$(VENV)/bin/pytest
	@$(MAKE) --no-print-directory test-library
	@$(MAKE) --no-print-directory test-postgres

# The library as someone else's dependency: a plain `pip install .` (ranges, resolved today)
# into a clean venv imports `resilience` without Django; then its tests run against that
# installed copy (from a scratch folder, so the source tree cannot shadow it).
test-library:
	@dir=$$(mktemp -d /tmp/resilience-lib.XXXXXX) && trap 'rm -rf $$dir' EXIT && \
	echo "== The library from a plain pip install, in a clean venv ($$dir)" && \
	$(PYTHON) -m venv $$dir/venv && \
	$$dir/venv/bin/pip install --quiet . && rm -rf build && \
	cp -r tests pyproject.toml $$dir/ && cd $$dir && \
	venv/bin/python -c 'import resilience, importlib.util as u; \
	  assert "site-packages" in resilience.__file__, resilience.__file__; \
	  assert u.find_spec("django") is None, "django is installed"; \
	  print("resilience imports from", resilience.__file__, "without Django")' && \
	venv/bin/pip install --quiet "$(CURDIR)[redis]" pytest pytest-asyncio hypothesis && \
	venv/bin/python -m pytest -q -p no:django -p no:cacheprovider tests/resilience

# The Django tests again, on a private PostgreSQL cluster on loopback (started and removed here).
test-postgres: install
	@dir=$$(mktemp -d /tmp/resilience-pg.XXXXXX) && chmod 755 $$dir && \
	url=$$($(PY) -m tests.services postgres start $$dir/pg) || { echo "PostgreSQL did not start"; exit 1; }; \
	echo "== Django tests on PostgreSQL ($$url)"; \
	DATABASE_URL=$$url $(VENV)/bin/pytest tests/dashboard -q; rc=$$?; \
	$(PY) -m tests.services postgres stop $$dir/pg; rm -rf $$dir; exit $$rc

bench: install
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-db.sqlite3*
