# The two set-up commands of the README: `make demo` and `make test`. Both install into .venv first.
VENV := .venv
BIN := $(VENV)/bin
LAUNCH := .venv-launch
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
# llama-cpp-python builds llama.cpp from source: only the library the export stage's quantizer and the tests'
# llama.cpp runtime need (no tools, examples, tests, server or multimodal parts), for any x86-64 CPU
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

.PHONY: demo test install gguf plots

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# llama.cpp for export.gguf. Its HF-to-GGUF converter ships only in llama-cpp-python's source package:
# pipeline/gguf.py runs it from share/llama.cpp, with the gguf-py of the same llama.cpp commit
gguf: $(VENV)/.gguf

$(VENV)/.gguf: $(VENV)/.installed requirements-gguf.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-gguf.txt
	$(BIN)/pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python -d $(VENV)/src \
		"$$(grep '^llama-cpp-python==' requirements-gguf.txt)"
	mkdir -p $(VENV)/share/llama.cpp
	tar -xzf $(VENV)/src/llama_cpp_python-*.tar.gz -C $(VENV)/share/llama.cpp --strip-components=3 --wildcards \
		'*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
	touch $@

# SkyPilot is a laptop tool (requirements-launch.txt, with its Runpod extra, which clashes with the pipeline's
# protobuf): the tests check the launch files with SkyPilot's own parser in a venv of its own, which needs
# SkyPilot alone, not the extra
$(LAUNCH)/.installed: requirements-launch.txt
	python3 -m venv $(LAUNCH)
	$(LAUNCH)/bin/pip install -q --disable-pip-version-check "$$(grep '^skypilot' requirements-launch.txt | \
		sed 's/\[[a-z]*\]//' | cut -d' ' -f1)" "$$(grep '^pytest==' requirements.txt)" \
		"$$(grep '^PyYAML==' requirements.txt)"
	touch $@

# The pipeline on the embedded demo: dvc exp run with configs/demo.yaml over params.yaml.
demo: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.experiment configs/demo.yaml
	@cat reports/metrics/eval.json

test: install gguf $(LAUNCH)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadfile tests --ignore=tests/test_launch.py
	$(LAUNCH)/bin/python -m pytest -q --noconftest -p no:cacheprovider tests/test_launch.py

# dvc plots show that renders offline (vega inlined): dvc_plots/index.html
plots: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.plots
