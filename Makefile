# Slicewise: `make run` starts the app on the demo data, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(or $(SLICEWISE_DATA),data)
PORT ?= 8501
ADDRESS ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: install run test demo-data sample-data lint bench clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

demo-data: install
	@test -f $(DATA)/demo/manifest.json || $(BIN)/python -m core demo-data --out $(DATA)/demo

sample-data: install
	$(BIN)/python -m core sample-data --out $(DATA)/lidc

run: install demo-data
	SLICEWISE_DATA=$(DATA) $(BIN)/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false --server.fileWatcherType none

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: install
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

lint: install
	$(BIN)/ruff check core pages app.py tests bench

bench: install demo-data
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
