"""One worker, this tree's code against another tree's, alternating, in one run on one broker and database.

    python -m bench.against_tree OLD_TREE [--worker state] [--pairs 3] [--count 20000]

OLD_TREE is a checkout of an earlier commit (``git worktree add /tmp/old <commit>``); its worker processes
run with ``PYTHONPATH=OLD_TREE`` (and ``PYTHONSAFEPATH``), so they import its code, while the load and the measuring are this
tree's. Each pair runs both on fresh records, new first in even pairs and old first in odd ones; the figure is each pair's throughput ratio, which
the machine's drift between pairs does not enter.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.load import command_stream, invoice_jobs
from bench.plumbing import measure_worker, produce_all, skip_backlog
from suspensions.local.stack import LocalStack
from topics import INVOICE_JOBS, SUSPENSION_COMMANDS
from workers.runtime.config import Settings

console = Console()
app = typer.Typer(add_completion=False)


async def _one(settings: Settings, worker: str, count: int, prefix: str, tree: Path | None) -> float:
    if worker == "state":
        await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
        await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, 5_000, prefix=prefix))
    else:
        await produce_all(settings, INVOICE_JOBS.name, invoice_jobs(count, 5_000, prefix=prefix))
    # PYTHONSAFEPATH: the working directory (this tree) is not put before PYTHONPATH on sys.path.
    env = {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"} if tree is not None else {}
    figure = await measure_worker(settings, worker, count, worker, "", 0.0, "", env=env)
    return figure.records_per_s or 0.0


async def _run(old_tree: Path, new_tree: Path | None, worker: str, pairs: int,
               count: int) -> list[tuple[float, float]]:
    stack = LocalStack(base=Settings())
    settings = (await stack.start()).model_copy(update={"log_level": "WARNING"})
    results = []
    try:
        for pair in range(pairs):
            # Which goes first alternates: the local broker's fetch slows as its partitions grow, so the
            # second of a pair reads a longer topic.
            if pair % 2 == 0:
                new = await _one(settings, worker, count, f"new{pair}-", new_tree)
                old = await _one(settings, worker, count, f"old{pair}-", old_tree)
            else:
                old = await _one(settings, worker, count, f"old{pair}-", old_tree)
                new = await _one(settings, worker, count, f"new{pair}-", new_tree)
            console.print(f"pair {pair + 1}: new {new:,.0f}/s, old {old:,.0f}/s, new/old {new / old:.3f}")
            results.append((new, old))
    finally:
        stack.stop()
    return results


@app.command()
def main(old_tree: Annotated[Path, typer.Argument(help="A checkout of the commit to compare with.")],
         worker: Annotated[str, typer.Option(help="state or billing")] = "state",
         pairs: Annotated[int, typer.Option(min=1)] = 3,
         count: Annotated[int, typer.Option(min=1_000)] = 20_000,
         new_tree: Annotated[Path | None, typer.Option(
             help="Run the new side from a checkout too (the same way as the old): a process importing from a "
                  "checkout through PYTHONPATH measured faster here than one importing this tree")] = None) -> None:
    if not (old_tree / "workers").is_dir():
        raise typer.BadParameter(f"{old_tree} is not a checkout of this project")
    results = asyncio.run(_run(old_tree.resolve(), new_tree.resolve() if new_tree else None, worker, pairs, count))
    ratios = [new / old for new, old in results if old]
    console.print(f"{worker}: new/old median {statistics.median(ratios):.3f} over {len(ratios)} pairs "
                  f"({', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    app()
