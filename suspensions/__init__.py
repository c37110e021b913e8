"""Suspensions: suspend and reinstate customers of coworking operators over Kafka."""

__version__ = "0.1.0"
