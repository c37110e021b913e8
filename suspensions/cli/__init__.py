"""The `suspensions` command: run workers, operate suspensions, inspect state.

One module per command group: ``service`` (topics, schema, contract, run, dev), ``operate``
(suspend, lift, bulk), ``inspect`` (status, history, list, billing) and ``operations`` (lag).
"""

from __future__ import annotations

import typer

from suspensions.cli import inspect, operate, operations, service

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False)
for group in (service, operate, inspect, operations):
    group.register(app)
