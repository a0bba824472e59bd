# The two commands of the README:  make demo   and   make test
# Both create (or reuse) the environment in .venv/ first (tools/ensure-venv.sh).

PYTHON := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: env demo test test-a1111 lint

env:
	@bash tools/ensure-venv.sh

demo: env
	$(PYTHON) -m sd_optim demo $(ARGS)

test: env
	$(PYTHON) -m pytest -q $(ARGS)

# The suite again in an A1111-like environment (requirements/a1111.txt, in .venv-a1111).
test-a1111:
	@bash tools/ensure-venv.sh requirements/a1111.txt .venv-a1111
	.venv-a1111/bin/python -m pytest -q -p no:cacheprovider $(ARGS)

lint: env
	$(PYTHON) -m ruff check sd_optim tests scripts tools install.py
