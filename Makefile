# The two commands of the README:  make demo   and   make test
# Both create (or reuse) the environment in .venv/ first (tools/ensure-venv.sh).

PYTHON := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: env browser postgres demo app test test-a1111 lint screenshots

env:
	@bash tools/ensure-venv.sh

# Debian's Chromium, which the browser tests drive through Playwright (tests/browser.py).
browser:
	@bash tools/ensure-chromium.sh

# Debian's PostgreSQL server binaries, from which the shared-study tests start their own server.
postgres:
	@bash tools/ensure-postgres.sh

demo: env
	$(PYTHON) -m sd_optim demo $(ARGS)

# The Optimize Merge tab in a browser on the demo's tiny models (http://127.0.0.1:7861).
app: env
	$(PYTHON) -m sd_optim app --demo $(ARGS)

test: env browser postgres
	$(PYTHON) -m pytest -q --durations=25 $(ARGS)

# The suite again in an A1111-like environment (requirements/a1111.txt, in .venv-a1111). The tests
# marked slow exercise only the core, which does not change with the pins: make test runs them.
test-a1111: browser postgres
	@bash tools/ensure-venv.sh requirements/a1111.txt .venv-a1111
	.venv-a1111/bin/python -m pytest -q -p no:cacheprovider --durations=25 -m "not slow" $(ARGS)

lint: env
	$(PYTHON) -m ruff check sd_optim tests scripts tools install.py

# The README's walkthrough pictures (docs/screenshots/), taken by the browser test of the demo app.
screenshots: env browser
	SD_OPTIM_SCREENSHOTS=docs/screenshots $(PYTHON) -m pytest -q -p no:cacheprovider tests/test_ui_browser.py -k "demo_app or rating"
