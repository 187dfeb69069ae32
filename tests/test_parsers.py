"""Decoding and text extraction: consistent, never a silent mix, binary skipped."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lokal.agent.parsers import TooSlow, Unsupported, decode, parse

SAMPLES = [
    ("Crème brûlée à la française, très bon.", "cp1252"),
    ("Grüße aus München, schöne Straße.", "latin-1"),
    ("Привет, как дела? Это тест кодировки.", "cp1251"),
    ("Ελληνικά κείμενα για δοκιμή κωδικοποίησης", "cp1253"),
]


@pytest.mark.parametrize(("text", "encoding"), SAMPLES)
def test_legacy_encodings(text: str, encoding: str) -> None:
    assert decode(text.encode(encoding))[0] == text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_byte_order_marks(encoding: str) -> None:
    text = "Grüße, 東京, 🚀"
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # these codecs write no BOM: add one
        data = ("\ufeff" + text).encode(encoding)
    assert decode(data)[0].lstrip("\ufeff") == text


def test_binary_and_invalid_utf8() -> None:
    with pytest.raises(Unsupported, match="binary"):
        decode(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    text, encoding = decode(b"valid start \xff\xfe\xfa broken bytes")
    assert "valid start" in text and encoding != "utf-8"


def test_html_visible_text_only() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Pump</h1><p>Hold the <b>red</b> button.</p>"
        "</body></html>"
    )
    parsed = parse(Path("x.html"), html.encode())
    assert parsed.kind == "html"
    assert "Hold the" in parsed.text and "red" in parsed.text and "secret" not in parsed.text


def test_docx() -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("First paragraph of the manual.")
    document.add_paragraph("Second: reset the pump.")
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = parse(Path("manual.docx"), buffer.getvalue())
    assert parsed.text == "First paragraph of the manual.\n\nSecond: reset the pump."


def test_markdown_and_code_are_text() -> None:
    assert parse(Path("a.md"), b"# Title\n").kind == "markdown"
    assert parse(Path("b.py"), b"print('x')\n").kind == "py"
    assert parse(Path("noext"), b"plain").kind == "text"


def test_pdf_time_limit_is_checked_between_pages() -> None:
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    for _ in range(3):
        writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    parsed = parse(Path("three.pdf"), buf.getvalue(), max_seconds=60)
    assert parsed.kind == "pdf" and parsed.metadata["pages"] == 3
    with pytest.raises(TooSlow, match="stopped at page 0 of 3"):
        parse(Path("three.pdf"), buf.getvalue(), max_seconds=-1)  # a deadline already past
