"""Shared pytest configuration."""

pytest_plugins = ["tests.fixtures.webgme", "tests.fixtures.storage", "tests.fixtures.jobs", "tests.fixtures.sciserver"]
pytest_plugins += ["tests.fixtures.worker"]
