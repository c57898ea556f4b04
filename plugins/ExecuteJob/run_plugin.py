"""Started by ExecuteJob.js with the plugin context on the command line (see deepforge_plugins.base.run)."""

import sys

from deepforge_plugins.base import run
from deepforge_plugins.execute import ExecuteJob

sys.exit(run(ExecuteJob))
