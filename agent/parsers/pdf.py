"""PDF (pypdf): the pages' text, a blank line between pages, the time limit checked between
pages."""

from __future__ import annotations

import io
import time

from .base import Check, Parsed, TooSlow, needs


def pdf(data: bytes, deadline: float | None, check: Check | None) -> Parsed:
    module = needs("pypdf", "PDF", "pypdf", "pdf")
    reader = module.PdfReader(io.BytesIO(data))
    pages = []
    for n, page in enumerate(reader.pages):
        if check is not None:
            check()
        if deadline is not None and time.monotonic() > deadline:
            msg = (
                f"PDF text extraction stopped at page {n} of {len(reader.pages)} (max_file_seconds)"
            )
            raise TooSlow(msg)
        pages.append(page.extract_text() or "")
    return Parsed("\n\n".join(pages), "pdf", metadata={"pages": len(pages)})
