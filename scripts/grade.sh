#!/usr/bin/env bash
# nbgrader end to end on the instructor notebooks: build a course folder, generate the student
# assignment (solutions and hidden tests removed), autograde the instructor solutions as a
# submission, and print each notebook's score; exits non-zero unless every one is full marks.
#   scripts/grade.sh [COURSE_DIR] [NOTEBOOK ...]   defaults: grading/ and every numbered notebook
# The student versions to hand out are in COURSE_DIR/release/minilg/. nbgrader runs alembic and
# jupyter from the virtual environment's bin, which is put first on PATH (no activation needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$root/.venv}
export PATH="$VENV/bin:$PATH" PYTHONHASHSEED=0 MINILG_QUIET=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # the kernels import this checkout's minilg
course=$(mkdir -p "${1:-$root/grading}" && cd "${1:-$root/grading}" && pwd)
[ $# -gt 0 ] && shift
notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=("$root"/notebooks/[0-9][0-9]_*.ipynb)
rm -rf "$course"/{source,release,submitted,autograded,feedback,gradebook.db}
mkdir -p "$course/source/minilg" "$course/submitted/instructor/minilg"
cp "$root/nbgrader_config.py" "$course/"
cp "${notebooks[@]}" "$course/source/minilg/"
cp "${notebooks[@]}" "$course/submitted/instructor/minilg/"
cd "$course"
nbgrader generate_assignment minilg --force
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} nbgrader autograde minilg --force
python - <<'PY'
import sys
from nbgrader.api import Gradebook
with Gradebook("sqlite:///gradebook.db") as gb:
    sub = gb.find_submission("minilg", "instructor")
    for nb in sub.notebooks:
        print(f"{nb.name:40s} {nb.score:g} / {nb.max_score:g}")
    print(f"{'total':40s} {sub.score:g} / {sub.max_score:g}")
    sys.exit(0 if sub.score == sub.max_score else 1)
PY
