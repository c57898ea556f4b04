"""Started by CancelExecution.js with the plugin context on the command line (see deepforge_plugins.base.run)."""

import sys

from deepforge_plugins.base import run
from deepforge_plugins.cancel import CancelExecution

sys.exit(run(CancelExecution))
