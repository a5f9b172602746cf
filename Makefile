# Two commands a reader needs (see README):
#   make book [SCALE=laptop|ci|paper] [STUDENT=1] [FORCE=1]
#                                       execute every chapter with papermill (reusing cached executions whose inputs
#                                       did not change; FORCE=1 re-executes) and build _build/html; STUDENT=1 leaves
#                                       the exercises' solutions out
#   make test                           unit tests + every chapter at ci scale + strict book build (real-data
#                                       tests use ../shared/data as COMPANION_MIRROR when it exists and the
#                                       variable is unset)
#   make reference                      laptop-scale build, then refresh the committed book/reference/ from it
# Both create the virtual environment .venv on first use (torch==2.13.0 first, then the pinned rest).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
SCALE  ?= laptop
STUDENT ?=
FORCE  ?=
yes     = $(filter 1 yes true,$(1))
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: book test venv clean reference

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements/lock.txt -e ".[book,test]"
	@touch $@

book: $(STAMP)
	$(PY) -m companion book --scale $(SCALE) $(if $(call yes,$(STUDENT)),--student) $(if $(call yes,$(FORCE)),--force)

reference: $(STAMP)
	$(PY) -m companion book --scale laptop
	$(PY) -m companion reference --scale laptop

# The team's local copies of the real public datasets, beside the repository: used as a mirror by the real-data
# tests unless COMPANION_MIRROR is already set (without them those tests fetch from the network or skip).
SHARED_DATA := $(abspath ../shared/data)

test: $(STAMP)
	@if [ -z "$${COMPANION_MIRROR+set}" ] && [ -d "$(SHARED_DATA)" ]; then export COMPANION_MIRROR="$(SHARED_DATA)"; fi; \
	 echo "COMPANION_MIRROR=$${COMPANION_MIRROR:-} (local mirror for the real-data tests)"; \
	 $(PY) -m pytest

clean:
	rm -rf _build
