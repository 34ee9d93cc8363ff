# Two entry points: `make demo` (synthesise, train, evaluate, analyse) and `make test`.
# Both install what they need: the TTS engines (apt) and a .venv with polyhead in it.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
CORPUS  ?= corpora/demo
RUN     ?= runs/demo

.PHONY: setup engines browser demo test bench clean

# The demo needs the package, the piper voices and faster-whisper; the tests add the rest.
$(DEMO_STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the pinned CPU build, so no dependency pulls a CUDA build
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[piper,zeroshot]"
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[test,piper,deploy,zeroshot]"
	touch $(STAMP)

setup: $(STAMP)

engines:
	bash scripts/install_engines.sh

browser:
	bash scripts/install_browser.sh

demo: $(DEMO_STAMP) engines
	$(BIN)/polyhead demo --corpus $(CORPUS) --run $(RUN) --no-compare

test: setup engines browser
	$(BIN)/python -m pytest -q tests

bench: setup engines
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) corpora runs
