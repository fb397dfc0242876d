"""The integration tier: one component against moto (the local cloud) or a real counterpart."""

from tests.fixtures.cloud import cloud, template

__all__ = ["cloud", "template"]
