"""``python -m deepforge_adapters.cli``: the ``deepforge`` command."""

from .app import main

main()
