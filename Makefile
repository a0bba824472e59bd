# The two commands of the README:  make demo   and   make test
# Both create (or reuse) the environment in .venv/ first (tools/ensure-venv.sh).

PYTHON := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: env demo test lint

env:
	@bash tools/ensure-venv.sh

demo: env
	$(PYTHON) -m sd_optim demo $(ARGS)

test: env
	$(PYTHON) -m pytest -q $(ARGS)

lint: env
	$(PYTHON) -m ruff check sd_optim tests
