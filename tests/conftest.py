"""Shared pytest setup. Fixtures live in tests/fixtures/, one module per concern."""

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.postgres",
    "tests.fixtures.app",
]
