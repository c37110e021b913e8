"""The service's version: one source of truth, ``version`` in pyproject.toml, read from the installed
package's metadata. It is said by ``suspensions --version``, ``/healthz``, the AsyncAPI and OpenAPI
documents, the user-agent of outgoing HTTP and the Kafka clients' ``client_id``; CHANGELOG.md says what
each version changed in the contract. The lowest layer, so that every layer above can say it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def service_version() -> str:
    """The installed package's version (``0+unknown`` when the package is not installed, e.g. a bare
    checkout on ``PYTHONPATH``: never a guess that could pass for a release)."""
    try:
        return version("suspensions")
    except PackageNotFoundError:
        return "0+unknown"


SERVICE_VERSION = service_version()
