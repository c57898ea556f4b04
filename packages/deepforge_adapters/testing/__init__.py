"""Conformance suites shipped with the library: a backend, built in or third party, runs the same tests."""
