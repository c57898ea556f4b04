"""A local SciServer that implements SciServer's REST contract (docs/sciserver.md), quirks included.

Login portal (Keystone v1 style), FileService and RACM/JOBM under one base URL; docker jobs run as local
subprocesses with the user's volumes mapped where a SciServer container would see them (see :mod:`.jobm`).
Started as a subprocess by ``tests/fixtures/sciserver.py``.
"""
