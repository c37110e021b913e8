"""The console's bulk upload form, read only once its sender is known, and only in memory.

A route that declares ``Form``/``File`` parameters has FastAPI read and parse its body before any
dependency runs, which would spool an anonymous upload to a temporary file before the session is
checked. The bulk route declares none: it checks the session, the space, the role and the token's
running bulk jobs, then parses the form here. The body is already bounded by the edge
(``SUSPENSIONS_API_MAX_BULK_BYTES``), so the file is kept in memory (the spool never rolls over to
disk) and nothing of a refused upload is written out.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.formparsers import MultiPartParser

FIELD_MAX_BYTES = 64 * 1024  # csrf, action, missed_invoices: short words


class UploadRefused(ValueError):
    """A form that is not the console's: not multipart, or without its file."""


@dataclass(frozen=True)
class BulkUpload:
    fields: dict[str, str]
    text: str  # the file, decoded as UTF-8 (undecodable bytes replaced: the report shows the line)


async def read_bulk_upload(request: Request, max_bytes: int) -> BulkUpload:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRefused("expected a multipart/form-data upload with a file")

    class InMemory(MultiPartParser):
        spool_max_size = max_bytes + 1  # the edge stops the body before the file could reach it

    form = await InMemory(request.headers, request.stream(), max_files=1, max_fields=10,
                          max_part_size=FIELD_MAX_BYTES).parse()
    try:
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise UploadRefused("the form has no file")
        data = await upload.read()
    finally:
        await form.close()
    return BulkUpload(fields, data.decode("utf-8", errors="replace"))
