# Every target works from a fresh clone: `make test` builds the environments it needs first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
LATEST := .venv-latest
BIN := $(VENV)/bin
# torch/torchvision are pinned for the environments (a local wheel; PyPI's newest would pull GBs of CUDA)
PIP_INSTALL = pip install -q -c .ci/constraints.txt
LATEST_FASTAI ?= fastai==2.8.12

.PHONY: install install-latest sync nbtest nbtest-slow pytest pytest-latest test docs docs-check chromium readme run-nbs demo clean bench-tables package-check

$(VENV)/.installed: settings.ini setup.py .ci/constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/$(PIP_INSTALL) -e ".[dev]"
	touch $@
install: $(VENV)/.installed

$(LATEST)/.installed: settings.ini setup.py .ci/constraints.txt
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/$(PIP_INSTALL) "$(LATEST_FASTAI)" pytest pytest-xdist hypothesis imbalanced-learn beautifulsoup4 html5lib -e .
	touch $@
install-latest: $(LATEST)/.installed

# nbdev_clean + nbdev_export must not change the tree: the notebooks are the source of the library
sync: install
	@before="$$(git status --porcelain --untracked-files=all)"; \
	PATH="$(BIN):$$PATH" nbdev_clean && PATH="$(BIN):$$PATH" nbdev_export; \
	after="$$(git status --porcelain --untracked-files=all)"; \
	if [[ "$$before" != "$$after" ]]; then echo "nbdev_clean/nbdev_export changed the tree:"; git status --porcelain --untracked-files=all; exit 1; fi; \
	if [[ -n "$$CI" && -n "$$after" ]]; then echo "git status not empty in CI:"; echo "$$after"; exit 1; fi; \
	echo "sync: notebooks, library and git status agree"

nbtest: install
	# one thread per notebook: two notebooks on two cores, each with two torch threads, oversubscribe and run 2-3x slower
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PATH="$(BIN):$$PATH" nbdev_test --n_workers 2 --timing

# Every notebook cell, the `#| slow` ones included: the longer trainings of the examples and tutorials, whose checks tests/ also makes
nbtest-slow: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PATH="$(BIN):$$PATH" nbdev_test --n_workers 2 --timing --flags slow

# two pytest workers (pytest-xdist) of one torch thread each: the tests' small tensors gain nothing from a second thread per process
ONE_THREAD = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_ARGS = tests -q -n 2 --durations=10
pytest: install chromium
	$(ONE_THREAD) $(BIN)/python -m pytest $(PYTEST_ARGS)

pytest-latest: install-latest
	$(LATEST)/bin/python -c "import fastai, fastcore; print('newest stack: fastai', fastai.__version__, 'fastcore', fastcore.__version__)"
	$(ONE_THREAD) $(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# The README's test command: everything CI checks. What waits on the disk or the network (the newest-fastai environment,
# Chromium, the package build) runs beside the notebooks, which keep both cores busy; -O keeps each step's output together
test: install
	$(MAKE) sync
	$(MAKE) -j4 -O nbtest install-latest chromium package-check
	$(MAKE) docs-check pytest pytest-latest

# The docs site without Quarto: nbdev's notebook processing into _proc/, outputs cleaned, mkdocs-material (mkdocs.yml) into _docs/
docs: install readme
	$(BIN)/python .ci/build_docs.py

# Debian's Chromium for the docs check (Playwright drives it; no browser download)
chromium:
	@command -v /usr/bin/chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "could not install Debian's chromium package (needs root and the Debian mirror)"; exit 1; }

# The site read in headless Chromium: every sidebar page, the search, no error/stderr/absolute path/missing plot/wide table; screenshots in _docs/screenshots/
docs-check: docs chromium
	$(BIN)/python .ci/check_docs.py

readme: install
	$(BIN)/python .ci/build_readme.py

# The README's benchmark tables and charts from the saved runs in bench/results/ (no training): re-execute the index, rebuild the README
bench-tables: install
	PATH="$(BIN):$$PATH" jupyter nbconvert --to notebook --execute --inplace nbs/index.ipynb
	PATH="$(BIN):$$PATH" nbdev_clean
	$(BIN)/python .ci/build_readme.py

# Execute every notebook in place so the docs show real outputs, then strip what nbdev_clean strips
run-nbs: install
	PATH="$(BIN):$$PATH" jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 nbs/[0-9]*.ipynb nbs/index.ipynb
	PATH="$(BIN):$$PATH" nbdev_clean

# The main job on the embedded data: every technique side by side, one seed (a smoke test, not a ranking); table and charts in bench_out/
demo: install
	$(BIN)/fastai-imbalance-bench --quick --out bench_out

# sdist + wheel, twine check, the wheel installed into an empty venv: imports fastai_imbalance.all, runs fastai-imbalance-bench --help
package-check: install
	.ci/check_package.sh

clean:
	rm -rf $(VENV) $(LATEST) _proc _docs dist
