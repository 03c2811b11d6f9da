"""The sam local checks' fixtures (defined in harness.py with the helpers the checks share)."""

from tests.sam_local.harness import docker, relay  # noqa: F401 - registers the fixtures
