"""nbval's kernels load minilg.notebook, so their figures carry the signature nbval compares.

The committed notebooks were executed the same way (`make notebooks`); a figure whose code now
draws something else (a curve added, a label changed) fails at its cell.
"""

import os
import tempfile
from pathlib import Path

from minilg.notebook import kernel_ipython_dir

os.environ["IPYTHONDIR"] = str(kernel_ipython_dir(Path(tempfile.mkdtemp(prefix="minilg-ipython-"))))
