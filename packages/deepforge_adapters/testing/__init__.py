"""Conformance suites shipped with the library: a third-party backend runs the same tests as the built-ins.

``deepforge_adapters.testing.storage`` (:class:`~deepforge_adapters.testing.storage.StorageConformance`) for
storage backends, ``deepforge_adapters.testing.compute`` for compute backends.  Each is a pytest test class
to subclass in a test module, with one fixture that returns a configured backend.
"""
