"""`suspensions customers`: what the service keeps of a person (issue 26).

`forget` erases a customer's name and email for a data-protection request: its state and history stay
(they hold only the id), and the erasure is recorded with who did it. A signup or profile record older
than the erasure (a replay) never brings them back.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import StringConstraints, TypeAdapter, ValidationError

from models.base import ACTOR_PATTERN
from suspensions import people
from suspensions.cli.common import JsonFlag, console, database, fail, print_json, run_async, settings

customers_app = typer.Typer(help="What the service keeps of a person: name and email.", no_args_is_help=True)
_ACTOR = TypeAdapter(Annotated[str, StringConstraints(pattern=ACTOR_PATTERN)])


@customers_app.command("forget")
def forget(customer: str,
           space: Annotated[str, typer.Option("--space", help="The customer's space (tenant).")],
           actor: Annotated[str, typer.Option("--actor", help="Who asks: admin:<id>, recorded in history.")],
           as_json: JsonFlag = False) -> None:
    """Erase the customer's name and email (a data-protection request), recorded as done by --actor."""
    try:
        _ACTOR.validate_python(actor)
    except ValidationError:
        fail(f"invalid --actor {actor!r}: expected admin:<id>", 2)
    if not actor.startswith("admin:"):
        fail(f"invalid --actor {actor!r}: expected admin:<id>", 2)

    async def main() -> bool:
        async with database(settings()) as conn:
            return await people.forget(conn, space, customer, actor)

    erased = run_async(main())
    if as_json:
        print_json({"customer_id": customer, "space_id": space, "erased": erased, "actor": actor})
    elif erased:
        console.print(f"erased the name and email of {customer} in {space} (recorded as done by {actor})")
    if not erased:
        if not as_json:
            console.print(f"no customer {customer} in {space}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(customers_app, name="customers")
