"""Suspensions: suspend and reinstate customers of coworking operators over Kafka."""

from models.version import SERVICE_VERSION as __version__

__all__ = ["__version__"]
