# The contract with a new user: `make demo` and `make test` work on a machine with only Python 3.11+.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RESULTS := reports/allure-results
ALLURE  := .tools/node_modules/.bin/allure
REPORT  := reports/allure-report
LIVING_DOC := reports/living-doc/index.html

.PHONY: demo test lint features features-bdd features-reversed features-shuffled catalog report bench fuzz clean

# The distribution was called `meshlib` before `meshlib-bdd`: an editable install of THIS checkout under the old
# name is uninstalled first (else two distributions claim the package, the `meshlib` command and the pytest plugin),
# after its build metadata here (meshlib.egg-info, found on sys.path from this folder); a `meshlib` from anywhere else
# is left alone.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@rm -rf meshlib.egg-info
	@if $(BIN)/python -c 'import json, pathlib, sys; from importlib.metadata import distributions; \
	    url = [json.loads(d.read_text("direct_url.json") or "{}") for d in distributions(name="meshlib")]; \
	    here = pathlib.Path(sys.argv[1]).resolve().as_uri(); \
	    sys.exit(not any(u.get("url") == here and u.get("dir_info", {}).get("editable") for u in url))' '$(CURDIR)'; \
	 then $(BIN)/python -m pip uninstall -q -y meshlib; fi
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job: every feature on the embedded mesh, Allure results with evidence and pictures, a summary, and the
# living doc (reports/living-doc/index.html: one file, opens from disk). The summary's verdict is the exit status.
demo: $(STAMP)
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@$(BIN)/behave -f allure -o $(RESULTS) -f progress --no-summary; \
	 $(BIN)/python -m meshlib.report.living_doc $(RESULTS) -o $(LIVING_DOC) --allure-report $(REPORT); \
	 $(BIN)/python -m meshlib.report.summary $(RESULTS)

# make test runs every feature four times (behave, pytest-bdd, reversed shards, shuffled) with their split checks at
# TEST_ALPHA, not behave.ini's 0.01: Envoy's random choices are not seeded, so a correct mesh fails each check at
# its level, and at 0.01 one make test in about ten would fail by chance. The features' sizes keep power 0.99 at both
# (tests/unit/test_split_levels.py checks them at both; docs/statistics.md).
TEST_ALPHA := 0.001

test: $(STAMP) $(ALLURE) lint
	@$(BIN)/python -m pytest --ignore=tests/bdd
	@$(BIN)/behave --dry-run -f null --no-summary   # an undefined step fails the build
	@$(BIN)/python -m meshlib.report.catalog --check
	@$(MAKE) --no-print-directory features ALPHA=$(TEST_ALPHA)
	@$(MAKE) --no-print-directory features-bdd ALPHA=$(TEST_ALPHA)
	@$(MAKE) --no-print-directory features-reversed ALPHA=$(TEST_ALPHA)
	@$(MAKE) --no-print-directory features-shuffled ALPHA=$(TEST_ALPHA)

features: $(STAMP)
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@$(BIN)/behave -f allure -o $(RESULTS) -f progress $(if $(ALPHA),-D alpha=$(ALPHA))

# Every feature under pytest-bdd, on two xdist workers side by side, each mesh with its own ports, state and temp files.
features-bdd: $(STAMP)
	@$(BIN)/python -m pytest -n 2 tests/bdd $(if $(ALPHA),--mesh-alpha $(ALPHA))

# Isolation and version gates: every feature again, its scenarios in reverse order, on the Istio 1.28 profile, in
# two behave shards side by side (tools/behave-shards).
features-reversed: $(STAMP)
	@$(BIN)/python tools/behave-shards --shards 2 -- -D scenario_order=reverse -D istio_version=1.28 -f progress $(if $(ALPHA),-D alpha=$(ALPHA))

# ... and once more in a random order (the seed is printed, so a failure can be replayed with -D scenario_order=shuffle:SEED).
features-shuffled: $(STAMP)
	@$(BIN)/behave -D scenario_order=shuffle -f progress $(if $(ALPHA),-D alpha=$(ALPHA))

lint: $(STAMP)
	@$(BIN)/ruff check meshlib tests steps environment.py tools/behave-shards

# Hypothesis fuzzing of the loader and translator: the tests `make test` runs with a few hundred examples, here
# with MESHLIB_FUZZ_SCALE (default 20: 22,000 examples, ~8 min) times more and fresh randomness each run.
fuzz: $(STAMP)
	@MESHLIB_FUZZ=long $(BIN)/python -m pytest tests/unit/test_fuzz.py -p no:randomly --hypothesis-show-statistics

catalog: $(STAMP)
	@$(BIN)/python -m meshlib.report.catalog

# HTML from the Allure results with the real Allure CLI (npm allure-commandline; needs Java 17). The previous
# report's history is carried into the results first (Trend shows every run; --clean only empties the output), with
# the categories (broken release / broken test / infrastructure) and, under CI, the executor; then the living doc
# again, linking each scenario to its page in the report. ALLURE_NO_ANALYTICS: the report loads nothing from outside.
report: $(STAMP) $(ALLURE)
	@$(BIN)/python -m meshlib.report.allure_run $(RESULTS) --previous $(REPORT)
	@ALLURE_NO_ANALYTICS=true $(ALLURE) generate $(RESULTS) -o $(REPORT) --clean
	@$(BIN)/python -m meshlib.report.living_doc $(RESULTS) -o $(LIVING_DOC) --allure-report $(REPORT)
	@echo "open $(LIVING_DOC) (from disk), and $(REPORT)/index.html over HTTP: python3 -m http.server -d $(REPORT) -b 127.0.0.1"

# The Allure CLI from npm (make report, and the browser test in make test).
$(ALLURE):
	@npm install --silent --no-audit --no-fund --prefix .tools allure-commandline@2.46.1

bench: $(STAMP)
	@for f in tests/bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .tools reports/allure-results reports/allure-report reports/summary.txt reports/living-doc \
	       reports/screenshots
