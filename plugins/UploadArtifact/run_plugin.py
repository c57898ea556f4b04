"""Started by UploadArtifact.js with the plugin context on the command line (see deepforge_plugins.base.run)."""

import sys

from deepforge_plugins.base import run
from deepforge_plugins.upload import UploadArtifact

sys.exit(run(UploadArtifact))
