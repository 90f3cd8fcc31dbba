# Two commands for people: `make demo` and `make test`. Both build .venv from the pinned set first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Nothing here phones home: the machine may only reach package registries.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test lock clean

$(INSTALLED): pyproject.toml constraints.txt connectors/salesforce/pubsub_api.proto
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	$(BIN)/python -m connectors.salesforce.generate_pubsub  # the Pub/Sub API stubs (git-ignored)
	touch $@

demo: $(INSTALLED)
	PREFECT_LOGGING_LEVEL=WARNING $(BIN)/python -m flows.demo

# Debian's PostgreSQL and Chromium, for the operations tests (skipped where they cannot be had).
test: $(INSTALLED)
	.ci/install-system-packages
	$(BIN)/python -m pytest

# Re-resolve the newest allowed versions into constraints.txt (run by a developer, then commit).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	{ echo "# Pinned, tested set for leadsync: regenerate with 'make lock'."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .prefect .pytest_cache .hypothesis
