"""nbgrader configuration of the minilg course (scripts/grade.sh copies it into a course folder).

The notebooks' exercises follow nbgrader's conventions (solution regions, locked self-check cells
with hidden tests); see minilg/grading.py. Under autograde every kernel sees MINILG_AUTOGRADE=1,
and cells whose first line is ``# MINILG_SKIP_UNDER_AUTOGRADE`` (training) are not executed.
"""

import os

from nbconvert.preprocessors import ClearMetadataPreprocessor, Preprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties, CheckCellMetadata, Execute, IgnorePattern, LimitOutput, SaveAutoGrades,
)
from traitlets import Bool

from minilg.grading import AUTOGRADE_ENV, skip_cell

os.environ[AUTOGRADE_ENV] = "1"  # inherited by the kernels nbgrader starts


class SkipUnderAutograde(Preprocessor):
    """Replace the cells marked with minilg.grading.SKIP_MARKER by a comment before execution."""

    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            replacement = skip_cell(cell.source)
            if replacement is not None:
                cell.source = replacement
        return cell, resources


c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
c.CourseDirectory.course_id = "minilg"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# Every notebook runs in under 3 minutes on 2 cores; no cell may take more than 5.
c.Execute.timeout = 300
# nbgrader 0.9's autograde steps, with the skip marker applied before execution.
c.Autograde.autograde_preprocessors = [
    SkipUnderAutograde, Execute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
    SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
