"""Office Open XML: DOCX (python-docx), PPTX (python-pptx), XLSX (openpyxl).

Each reads what a person sees, in reading order, with headings the chunker splits on:

- DOCX: the pages' headers, then the body's paragraphs and tables in document order (a table
  row per line, cells joined by `` | ``; a merged cell once; content controls opened),
  headings (``Heading N`` and ``Title`` styles) as Markdown headings, then the footnotes and
  endnotes, then the footers.
- PPTX: per slide a heading (its title, else ``Slide N``), the text of its shapes top to
  bottom, left to right (groups opened, tables as rows), then its speaker notes.
- XLSX: per visible sheet a heading (its name), then its rows, one line each, cells joined by
  `` | `` (the values last calculated, not the formulas).

Each is zip-checked first (:func:`.base.zip_guard`).
"""

from __future__ import annotations

import io
from typing import Any

from .base import Check, Parsed, blocks, needs, row, zip_guard

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_NOTES = (
    ("/word/footnotes.xml", f"{_W}footnote"),
    ("/word/endnotes.xml", f"{_W}endnote"),
)


def docx(data: bytes) -> Parsed:
    module = needs("docx", "DOCX", "python-docx", "docx")
    zip_guard(data, "DOCX")
    document = module.Document(io.BytesIO(data))
    headers: list[str] = []
    footers: list[str] = []
    for section in document.sections:
        for attr, into in (
            ("first_page_header", headers),
            ("header", headers),
            ("even_page_header", headers),
            ("first_page_footer", footers),
            ("footer", footers),
            ("even_page_footer", footers),
        ):
            part = getattr(section, attr)
            if part.is_linked_to_previous:  # no definition of its own: nothing new to read
                continue
            text = blocks(_docx_blocks(part))
            if text and text not in into:
                into.append(text)
    body = _docx_blocks(document)
    notes = _docx_notes(document)
    return Parsed(blocks([*headers, *body, *notes, *footers]), "docx")


def _docx_blocks(container: Any) -> list[str]:
    """Paragraphs and tables of a document's body, a header, footer or cell, in document
    order, content controls (``w:sdt``, which python-docx's ``iter_inner_content`` passes
    over: a filled-in template's fields) opened."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    box = getattr(container, "_body", container)  # a Document holds its body
    out = []
    for element in _block_elements(box._element):
        if element.tag == f"{_W}tbl":
            out.append(_docx_table(Table(element, box)))
        else:
            paragraph = Paragraph(element, box)
            out.append(_heading(paragraph) + paragraph.text)
    return out


def _block_elements(parent: Any) -> list[Any]:
    out = []
    stack = list(reversed(parent))
    while stack:
        element = stack.pop()
        if element.tag in (f"{_W}p", f"{_W}tbl"):
            out.append(element)
        elif element.tag == f"{_W}sdt":
            content = element.find(f"{_W}sdtContent")
            if content is not None:
                stack.extend(reversed(content))
    return out


def _heading(paragraph: Any) -> str:
    style = getattr(paragraph.style, "name", "") or ""
    if style == "Title":
        return "# "
    if style.startswith("Heading "):
        level = style.removeprefix("Heading ")
        if level.isdigit() and 1 <= int(level) <= 6:
            return "#" * int(level) + " "
    return ""


def _docx_table(table: Any) -> str:
    lines = []
    for tr in table.rows:
        cells, seen = [], set()
        for cell in tr.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column it spans
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(_docx_blocks(cell)))
        lines.append(row(cells))
    return "\n".join(line for line in lines if line)


def _docx_notes(document: Any) -> list[str]:
    """Footnotes and endnotes (python-docx has no API for them: their parts' XML), each
    ``[n] text`` numbered as Word shows them (in order); the separator notes Word writes (ids
    below 1) left out."""
    out: list[str] = []
    parts = {str(p.partname): p for p in document.part.package.iter_parts()}
    for name, tag in _NOTES:
        part = parts.get(name)
        if part is None:
            continue
        from docx.oxml import parse_xml

        root = parse_xml(part.blob)
        shown = 0
        for note in root.iter(tag):
            number = note.get(f"{_W}id") or ""
            if not number.lstrip("-").isdigit() or int(number) < 1:
                continue
            paragraphs = (
                "".join(t.text or "" for t in p.iter(f"{_W}t")) for p in note.iter(f"{_W}p")
            )
            text = " ".join(" ".join(paragraphs).split())
            if text:
                shown += 1
                out.append(f"[{shown}] {text}")
    return out


def pptx(data: bytes, check: Check) -> Parsed:
    module = needs("pptx", "PPTX", "python-pptx", "pptx")
    zip_guard(data, "PPTX")
    presentation = module.Presentation(io.BytesIO(data))
    out = []
    for n, slide in enumerate(presentation.slides, 1):
        check()
        title = slide.shapes.title
        heading = " ".join(title.text_frame.text.split()) if title is not None else ""
        out.append(f"# {heading or f'Slide {n}'}")
        shapes = [s for s in slide.shapes if title is None or s.shape_id != title.shape_id]
        out.extend(_shape_texts(shapes))
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            if frame is not None and frame.text.strip():
                out.append(f"Notes: {frame.text}")
    return Parsed(blocks(out), "pptx", metadata={"slides": len(presentation.slides)})


def _shape_texts(shapes: list[Any]) -> list[str]:
    """Text of shapes in reading order: top to bottom, then left to right."""
    out = []
    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if getattr(shape, "shapes", None) is not None:  # a group
            out.extend(_shape_texts(list(shape.shapes)))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = (row([c.text for c in r.cells]) for r in shape.table.rows)
            out.append("\n".join(r for r in rows if r))
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            out.append("\n".join(p.text for p in shape.text_frame.paragraphs))
    return out


def xlsx(data: bytes, check: Check) -> Parsed:
    module = needs("openpyxl", "XLSX", "openpyxl", "xlsx")
    zip_guard(data, "XLSX")
    book = module.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    out = []
    try:
        sheets = [s for s in book.worksheets if s.sheet_state == "visible"]
        for sheet in sheets:
            lines = []
            for n, values in enumerate(sheet.iter_rows(values_only=True)):
                if n % 1000 == 0:
                    check()
                line = row(["" if v is None else str(v) for v in values])
                if line:
                    lines.append(line)
            if lines:
                out.append(f"# {sheet.title}\n" + "\n".join(lines))
    finally:
        book.close()
    return Parsed(blocks(out), "xlsx", metadata={"sheets": len(sheets)})
