# minilg: the two commands of the README, and the checks CI runs.
#   make run    set up .venv, then run the main job (compare the mechanisms on the embedded data)
#   make test   set up .venv, then run every test and notebook (pytest --nbval)
#   make lint   mypy --strict, ruff and import-linter (the layers in .importlinter): CI's one lint
#   make notebooks    re-execute notebooks (NOTEBOOKS=...) with figure signatures; commit outputs
#   make wheel-check  build the wheel, install it in a fresh venv outside the checkout, run the CLI
#   make grade        nbgrader end to end on the numbered notebooks (instructor solutions: full marks)
#   make coursework   student versions of the notebooks in student/
# Override the PyTorch build with TORCH_SPEC=..., e.g. `make test TORCH_SPEC="torch==2.5.1"`.

VENV ?= .venv
PY := $(VENV)/bin/python
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

.PHONY: setup run test lint info notebooks wheel-check grade coursework clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

# The main job needs the library only; `make test` adds the test and notebook tools.
run:
	VENV=$(VENV) EXTRAS= NO_COMPILE=1 bash scripts/setup.sh
	$(PY) -m minilg compare

info: setup
	$(PY) -m minilg info

test: setup
	$(PY) -m pytest $(NBVAL) tests notebooks

lint: setup
	$(PY) -m mypy --strict minilg
	$(PY) -m ruff check minilg tests
	$(VENV)/bin/lint-imports

# Re-execute notebooks in place (outputs are committed; do this after changing the library).
# The kernels load minilg.notebook, so every figure is stored with the signature nbval compares.
NOTEBOOKS ?= notebooks/[0-9]*.ipynb
notebooks: setup
	ipython_dir=$$(mktemp -d) && $(PY) -m minilg.notebook kernel-dir "$$ipython_dir" && \
	for nb in $(NOTEBOOKS); do echo "==> $$nb"; \
	  IPYTHONDIR="$$ipython_dir" $(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --inplace "$$nb" || exit 1; done; rm -rf "$$ipython_dir"

wheel-check:
	bash scripts/check_wheel.sh

# nbgrader end to end: assignment generated, instructor solutions autograded (full marks)
grade: setup
	VENV=$(VENV) bash scripts/grade.sh grading

# Student versions of the notebooks (solutions removed, self-checks kept, outputs cleared).
coursework: setup
	$(PY) -m minilg coursework --out student

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
