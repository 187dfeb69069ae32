"""Documents read as a person reads them (issue 16): DOCX tables, headers, footers and
footnotes; PPTX, XLSX, ODT, EPUB, RTF and e-mail; formats lokal cannot read skipped with a
reason that names them. Every document is written by its format's own writer library."""

from __future__ import annotations

import gzip
import io
import sqlite3
import sys
from pathlib import Path

import pytest

from lokal.agent.parsers import SUFFIXES, Unsupported, parse

from . import formats


def test_docx_tables_headers_footers_in_reading_order() -> None:
    text = parse(Path("m.docx"), formats.docx()).text
    assert text.split("\n\n") == [
        "Acme Pump Manual, revision 7",
        "# Pump P-101",
        "To reset the pump, hold the red button for five seconds.",
        "Code | Meaning\nERR-4711 | Pump overheated\nERR-4712 | Valve stuck open",
        "## Service",
        "Call the service desk when the fault repeats.",
        "Grease the bearings monthly. | Check the seals yearly.",
        "Page footer: confidential",
    ]
    assert len(formats.split_on_headings(text)) == 3


def test_docx_footnotes_and_endnotes() -> None:
    # python-docx writes no footnotes: pandoc (a real DOCX writer) does
    text = parse(Path("n.docx"), formats.docx_with_notes()).text
    assert "The valve body is cast in brass." in text
    assert text.endswith("[1] The valve body is cast in brass.")


def test_pptx_slides_and_notes() -> None:
    text = parse(Path("deck.pptx"), formats.pptx()).text
    assert text.split("\n\n") == [
        "# Quarterly results",
        "Revenue grew by nine percent in the third quarter.",
        "Region | Growth\nNorth | 12%",
        "The new plant opens in March.",
        "Notes: Mention the safety record before the numbers.",
        "# Slide 2",
        "An untitled slide still has text.",
    ]


def test_xlsx_sheets_as_rows() -> None:
    text = parse(Path("stock.xlsx"), formats.xlsx()).text
    assert text == (
        "# Parts\nPart | Stock | Note\nValve V-12 | 40\nPump P-101 | 3 | reorder at 2"
        "\n\n# Suppliers\nAcme | Springfield"
    )
    assert "internal price" not in text  # a hidden sheet is not what a reader sees


def test_odt_headings_paragraphs_tables() -> None:
    text = parse(Path("plan.odt"), formats.odt()).text
    assert text.split("\n\n") == [
        "Maintenance plan header",
        "# Maintenance plan",
        "Grease the bearings monthly.",
        "## Yearly",
        "Replace the seals every spring.",
        "- Drain the pump.",
        "- Open the housing.",
        "Part | Interval\nBearing | monthly",
    ]


def test_epub_chapters_in_spine_order() -> None:
    text = parse(Path("book.epub"), formats.epub()).text
    assert text.split("\n\n") == [
        "# The Pump Book",
        "# Introduction",
        "Pumps move water from low to high ground.",
        "# Maintenance",
        "A pump that is greased monthly lasts for decades.",
    ]


def test_rtf_text_and_footnotes() -> None:
    text = parse(Path("memo.rtf"), formats.rtf()).text
    for sentence in formats.RTF_SENTENCES:
        assert sentence in text
    assert "\\" not in text and "{" not in text


def test_eml_body_and_attachments_named() -> None:
    parsed = parse(Path("mail.eml"), formats.eml())
    assert parsed.text.split("\n\n") == [
        "# Pump P-101 failed overnight",
        "From: Ana Novak <ana@example.com>\nTo: service@example.com\n"
        "Date: Mon, 05 Jan 2026 07:30:00 +0100",
        "The pump stopped at three in the morning.\nPlease send a technician.",
        "Attachments: pressure-log.xlsx "
        "(application/vnd.openxmlformats-officedocument.spreadsheetml.sheet), photo.png "
        "(image/png)",
    ]
    assert parsed.metadata == {"attachments": 2}


def test_eml_html_only_body() -> None:
    text = parse(Path("n.eml"), formats.eml(html_only=True)).text
    assert text.endswith("The pump stopped at three in the morning.")
    assert "<p>" not in text and "<b>" not in text


@pytest.mark.parametrize(
    ("suffix", "module", "extra"),
    [
        (".docx", "docx", "docx"),
        (".pptx", "pptx", "pptx"),
        (".xlsx", "openpyxl", "xlsx"),
        (".odt", "odf.opendocument", "odt"),
        (".epub", "ebooklib.epub", "epub"),
        (".rtf", "striprtf.striprtf", "rtf"),
        (".pdf", "pypdf", "pdf"),
    ],
)
def test_missing_extra_names_format_and_extra(
    suffix: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = formats.make(suffix)
    # an extra not installed: its import fails as it would without it
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(Unsupported) as caught:
        parse(Path(f"file{suffix}"), data)
    message = str(caught.value)
    assert message.startswith(f"{SUFFIXES[suffix]} needs ")
    assert message.endswith(f"pip install 'lokal[{extra}]'")


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


def _sqlite(tmp: Path) -> bytes:
    with sqlite3.connect(tmp / "x.db") as db:
        db.execute("create table t (a)")
    return (tmp / "x.db").read_bytes()


def test_binary_formats_are_named(tmp_path: Path) -> None:
    cases = {
        "photo.png": (_png(), "PNG image (.png): a binary format lokal does not read"),
        "python": (
            Path(sys.executable).resolve().read_bytes()[:65536],
            "ELF executable or library (no suffix)",
        ),
        "notes.txt.gz": (gzip.compress(b"text"), "gzip archive (.gz)"),
        "cache.db": (_sqlite(tmp_path), "SQLite database (.db)"),
        "report.doc": (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
            "Word 97-2003 document (.doc): a legacy binary format lokal does not read; "
            "saved as .docx it is read with pip install 'lokal[docx]'",
        ),
        "blob.bin": (bytes(range(256)) * 4, "binary data of an unknown format (.bin)"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(Unsupported) as caught:
            parse(Path(name), data)
        assert str(caught.value).startswith(reason), name
        assert "NUL" not in str(caught.value)


def test_a_document_that_is_not_its_format() -> None:
    with pytest.raises(Unsupported, match="not a DOCX file"):
        parse(Path("old.docx"), b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(Unsupported, match="not an RTF file"):
        parse(Path("x.rtf"), b"plain text with an rtf suffix")


def test_docx_content_controls_are_read() -> None:
    # a filled-in template: a field (w:sdt) around a paragraph and one around a table
    import docx as python_docx
    from docx.oxml import parse_xml

    document = python_docx.Document()
    document.add_paragraph("Before the fields.")
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    field = parse_xml(
        f"<w:sdt {w}><w:sdtPr/><w:sdtContent><w:p><w:r><w:t>Customer: Acme Water Works"
        "</w:t></w:r></w:p></w:sdtContent></w:sdt>"
    )
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Serial", "P-101-7788"
    wrapper = parse_xml(f"<w:sdt {w}><w:sdtPr/><w:sdtContent/></w:sdt>")
    table._tbl.addprevious(wrapper)
    wrapper[1].append(table._tbl)
    wrapper.addprevious(field)
    text = parse(Path("form.docx"), formats._saved(document)).text
    assert text.split("\n\n") == [
        "Before the fields.",
        "Customer: Acme Water Works",
        "Serial | P-101-7788",
    ]
