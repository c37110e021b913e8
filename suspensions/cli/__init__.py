"""The `suspensions` command: run workers, operate suspensions, inspect state.

One module per command group: ``service`` (topics, schema, contract, run, dev), ``operate``
(suspend, lift, bulk, schedule), ``inspect`` (status, history, list, billing), ``operations`` (lag,
doctor), ``access`` (tokens) and ``webhooks`` (endpoints and their deliveries).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from models.version import SERVICE_VERSION
from suspensions.cli import access, customers, inspect, operate, operations, service, webhooks

# No locals in tracebacks: they would print settings and secrets.
app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)
for group in (service, operate, inspect, operations, access, webhooks, customers):
    group.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"suspensions {SERVICE_VERSION}")
        raise typer.Exit()


@app.callback()
def _quiet_clients(
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="Print the service's version and exit.")] = False,
) -> None:
    """A command reports a failure in one line of its own: the Kafka client's own error logs would only
    repeat it. `run` and `dev` configure the workers' logging themselves."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
