"""deepforge-adapters: one interface to where artifacts live (storage) and where operations run (compute).

The public entry points are :mod:`deepforge_adapters.storage` and :mod:`deepforge_adapters.compute`;
everything else is plumbing that those two share.
"""

__version__ = "0.1.0"
