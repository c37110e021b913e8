"""Bulk CSV parsing streams lines and reports malformed ones with their line number."""

from __future__ import annotations

import io
from collections.abc import Iterator

from models import Action
from suspensions.operators import BulkLine, MalformedLine, bulk_command, read_bulk_lines


def test_header_optional_notes_and_malformed_lines() -> None:
    text = "customer_id,space_id,note\nc1,s1\nc2,s1,moved out\n\nonly\nc3,\n,s1\na,b,c,d\n\"c4\",\"s2\",\"a, b\"\n"
    items = list(read_bulk_lines(io.StringIO(text)))
    assert items == [
        BulkLine(2, "c1", "s1", None),
        BulkLine(3, "c2", "s1", "moved out"),
        MalformedLine(5, "expected 2 or 3 columns (customer_id,space_id[,note]), got 1"),
        MalformedLine(6, "space_id is empty"),
        MalformedLine(7, "customer_id is empty"),
        MalformedLine(8, "expected 2 or 3 columns (customer_id,space_id[,note]), got 4"),
        BulkLine(9, "c4", "s2", "a, b"),
    ]


def test_streams_without_reading_everything_first() -> None:
    class Endless(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.served = 0

        def __iter__(self) -> Iterator[str]:
            return self

        def __next__(self) -> str:
            self.served += 1
            return f"c{self.served},s1\n"

    source = Endless()
    lines = read_bulk_lines(source)
    first = [next(lines) for _ in range(3)]
    assert [line.customer_id for line in first] == ["c1", "c2", "c3"]
    assert source.served == 3


def test_lines_with_control_characters_are_malformed_and_every_other_line_makes_a_command() -> None:
    """A hostile line is reported on its own (the contract would refuse its command, PostgreSQL its NUL);
    every line read as good builds a valid command. A note keeps tab and line breaks."""
    rows = []
    for code in range(0x20):
        char = chr(code)
        rows += [f'"a{char}b",s1', f'c1,"s{char}1"', f'c1,s1,"x{char}y"']
    items = list(read_bulk_lines(io.StringIO("\n".join(rows) + "\n")))
    good = [item for item in items if isinstance(item, BulkLine)]
    assert sorted({item.note for item in good if item.note}) == ["x\ty", "x\ny", "x\ry"]
    assert all("\x00" not in item.customer_id + item.space_id for item in good)
    for item in good:
        bulk_command(Action.SUSPEND, item, "admin:bulk", None)  # the contract accepts it
    bad = [item for item in items if isinstance(item, MalformedLine)]
    assert len(bad) == 3 * 32 - 3
    assert {item.error for item in bad} == {
        "customer_id or space_id holds a control character (U+0000 to U+001F)",
        "note holds a control character other than tab, line feed and carriage return"}
