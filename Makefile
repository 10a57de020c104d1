# minilg: the two commands of the README, and the checks CI runs.
#   make run    set up .venv, then run the main job (compare the mechanisms on the embedded data)
#   make test   set up .venv, then run every test and notebook (pytest --nbval)
#   make lint   mypy --strict and ruff on the library
#   make coursework   student versions of the notebooks in student/
# Override the PyTorch build with TORCH_SPEC=..., e.g. `make test TORCH_SPEC="torch==2.5.1"`.

VENV ?= .venv
PY := $(VENV)/bin/python
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

.PHONY: setup run test lint info notebooks coursework clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

run: setup
	$(PY) -m minilg compare

info: setup
	$(PY) -m minilg info

test: setup
	$(PY) -m pytest $(NBVAL) tests notebooks

lint: setup
	$(PY) -m mypy --strict minilg
	$(PY) -m ruff check minilg tests

# Re-execute every notebook in place (outputs are committed; do this after changing the library).
notebooks: setup
	for nb in notebooks/[0-9]*.ipynb; do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; done

# Student versions of the notebooks (solutions removed, self-checks kept, outputs cleared).
coursework: setup
	$(PY) -m minilg coursework --out student

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
