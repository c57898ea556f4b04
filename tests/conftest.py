"""Shared pytest configuration."""

pytest_plugins = [
    "tests.fixtures.webgme",
    "tests.fixtures.storage",
    "tests.fixtures.jobs",
    "tests.fixtures.sciserver",
    "tests.fixtures.s3",
    "tests.fixtures.plugins",
    "tests.fixtures.browser",
    "tests.fixtures.worker",
    "tests.fixtures.attacker",
    "tests.fixtures.deepforge",
    "tests.fixtures.ray",
    "tests.fixtures.slurm",
]
