# The two set-up commands of the README: `make demo` and `make test`. Both install into .venv first.
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install plots

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# The pipeline on the embedded demo: dvc exp run with configs/demo.yaml over params.yaml.
demo: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.experiment configs/demo.yaml
	@cat reports/eval.json

test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests

# dvc plots show that renders offline (vega inlined): dvc_plots/index.html
plots: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.plots
