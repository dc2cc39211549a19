# The two commands of the README: `make demo` and `make test`.
# Both create the virtual environment they need (.venv) on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit e2e bench clean diagram

$(STAMP): pyproject.toml scripts/install-system-deps
	bash scripts/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/isthmus demo

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(VENV)/bin/python bench/watch_fanout.py

# Data plane: direct vs isthmus vs HAProxy proxy pair (docs/benchmarks.md);
# e.g. make bench-proxy BENCH_PROXY_ARGS='--only direct,haproxy --json proxy.json'
.PHONY: bench-proxy
BENCH_PROXY_ARGS ?=
bench-proxy: $(STAMP)
	$(VENV)/bin/python bench/proxy_pair.py $(BENCH_PROXY_ARGS)

# docs/two-regions.svg (referenced from the README) from its Graphviz source.
diagram: docs/two-regions.svg
docs/two-regions.svg: docs/two-regions.dot
	dot -Tsvg $< -o $@

clean:
	rm -rf $(VENV)
