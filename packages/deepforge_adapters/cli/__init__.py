"""``deepforge``: the command line over the adapters (backends, storage transfers, secrets).

Exit codes are part of the interface, so scripts can tell "you called it wrong" from "it broke":
``0`` success, ``2`` usage or configuration errors (bad flags, bad JSON, bad config, bad dataInfo, unknown
backend), ``1`` runtime failures (storage errors, integrity errors, I/O).  A failure prints one line naming
the cause on stderr; ``--debug`` adds the traceback and debug logs.  Secret values never reach the output:
config secrets are registered for redaction before anything can log or raise them.

``main`` (:mod:`.app`) is a click group; each subcommand lives in its own module (:mod:`.backends`,
:mod:`.storage`, :mod:`.secrets`, :mod:`.run`) and :mod:`.app` adds it.  :mod:`.common` holds what they share.
This package is the top layer: nothing in the library imports it.
"""

from .app import main
from .common import FAILURE_EXIT, USAGE_EXIT, CliError, CliUsageError

__all__ = ["FAILURE_EXIT", "USAGE_EXIT", "CliError", "CliUsageError", "main"]
