"""Decoding and text extraction: consistent, never a silent mix, binary skipped."""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path

import pytest

from lokal.agent.parsers import TooLarge, TooSlow, Unsupported, decode, parse

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


def test_html_reads_as_a_person_reads() -> None:
    # issue 16: inline elements one line; headings the chunker splits on; tables as rows
    html = """<!doctype html><html><head><title>Pump manual</title></head><body>
      <header><a href="/">Acme</a> <a href="/shop">Shop</a></header>
      <nav><ul><li><a href="/a">Home</a></li><li>About</li></ul></nav>
      <main><article>
        <header><h1>Pump P-101</h1><p>Updated <time>2026-01-05</time></p></header>
        <p>Hold the <b>red</b>
           button for <em>five</em> seconds.</p>
        <h2>Fault codes</h2>
        <table><caption>Codes</caption>
          <tr><th>Code</th><th>Meaning</th></tr>
          <tr><td>ERR-4711</td><td>Pump <i>overheated</i></td></tr></table>
        <ul><li>Check the <a href="#">valve</a>.</li><li><p>Call service.</p></li></ul>
        <p>Line one<br>line two</p>
        <pre>reset --hard
  --force</pre>
        <div hidden>Hidden by attribute.</div>
        <p style="color: red; display : none">Hidden by style.</p>
        <span aria-hidden="true">Icon text.</span>
        <div role="navigation">Role navigation.</div>
        <footer>Article footer stays.</footer>
      </article></main>
      <aside>Related links</aside>
      <footer>Copyright Acme</footer>
      <script>var tracking = 1;</script><noscript>Enable JavaScript</noscript>
    </body></html>"""
    text = parse(Path("p.html"), html.encode()).text
    assert text.split("\n\n") == [
        "# Pump P-101",
        "Updated 2026-01-05",
        "Hold the red button for five seconds.",
        "## Fault codes",
        "Codes\nCode | Meaning\nERR-4711 | Pump overheated",
        "- Check the valve.",
        "- Call service.",
        "Line one\nline two",
        "reset --hard\n  --force",
        "Article footer stays.",
    ]
    # the chunker splits on the headings the walk made
    from lokal.chunking import SEPARATORS

    assert len(re.split(SEPARATORS[0], text)) == 2


def test_html_deep_nesting_does_not_recurse() -> None:
    html = "<div>" * 3000 + "<p>Deep <b>inside</b>.</p>" + "</div>" * 3000
    assert parse(Path("deep.html"), html.encode()).text == "Deep inside."


def test_html_in_a_legacy_encoding() -> None:
    html = "<p>Zażółć gęślą jaźń: żółta łódź płynie po Wiśle.</p>"
    assert parse(Path("pl.html"), html.encode("cp1250")).text == html[3:-4]


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


def docx_bomb(inflated: int) -> bytes:
    """A real DOCX (python-docx) whose word/document.xml is replaced by ``inflated`` bytes of
    highly compressible XML, written in 1 MB blocks (the test's memory stays small)."""
    import zipfile

    import docx

    buffer = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("A real document.")
    document.save(buffer)
    block = (b"<w:p><w:r><w:t>" + b"A" * 1000 + b"</w:t></w:r></w:p>") * 1000
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != "word/document.xml":
                dst.writestr(info, src.read(info.filename))
                continue
            member = zipfile.ZipInfo("word/document.xml")
            member.compress_type = zipfile.ZIP_DEFLATED
            member._compresslevel = 1  # type: ignore[attr-defined]  # fast; still > 100x
            with dst.open(member, "w", force_zip64=True) as f:
                for _ in range(inflated // len(block)):
                    f.write(block)
    return out.getvalue()


def test_docx_zip_bomb_is_refused_before_inflating() -> None:
    data = docx_bomb(256 * 1024 * 1024)
    assert len(data) < 3_000_000
    with pytest.raises(TooLarge, match=r"word/document.xml would inflate .* a zip bomb"):
        parse(Path("bomb.docx"), data)


def test_zip_limits_total_and_members() -> None:
    import zipfile

    from lokal.agent import parsers

    out = io.BytesIO()
    one_mib = bytes(1024 * 1024)  # members this small are not held to the ratio: the total is
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(parsers.MAX_INFLATED_BYTES // len(one_mib) + 1):
            z.writestr(f"media/{i}.bin", one_mib)
    with pytest.raises(TooLarge, match=r"would inflate to .* MAX_INFLATED_BYTES"):
        parsers.zip_guard(out.getvalue(), "DOCX")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(parsers.MAX_ZIP_MEMBERS + 1):
            z.writestr(f"{i}", b"")
    with pytest.raises(TooLarge, match="zip members"):
        parse(Path("many.docx"), out.getvalue())


def test_mostly_utf8_with_a_few_bad_bytes_stays_utf8() -> None:
    # Issue 12: 4 bad bytes made the whole file ISO-8859-2 ("café" stored as "cafĂŠ")
    good = "Le café est prêt à 8 h. Crème brûlée, déjà vu, naïve, Grüße, Øre.\n" * 30
    data = good.encode() + b"broken: \xe9\xff\x80\xfe end\n"
    text, encoding = decode(data)
    assert text.startswith(good)
    assert text.count("\ufffd") == 4 and "end" in text
    assert encoding == "utf-8 (4 invalid byte sequences replaced)"
    parsed = parse(Path("notes.txt"), data)
    assert parsed.warning == "not valid UTF-8: 4 invalid byte sequences replaced with U+FFFD"
    assert parse(Path("ok.txt"), good.encode()).warning is None


@pytest.mark.parametrize(("text", "encoding"), SAMPLES)
def test_legacy_encodings_are_not_taken_for_broken_utf8(text: str, encoding: str) -> None:
    # a legacy file with one UTF-8 character pasted into it is still read in its code page
    data = text.encode(encoding) + " née".encode()
    decoded, found = decode(data)
    assert not found.startswith("utf-8") and "\ufffd" not in decoded


#: Real sentences (pangrams and plain statements) in the languages each legacy encoding is for.
KNOWN = [
    ("cp1250", "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy."),
    ("cp1251", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
    ("cp1252", "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë."),
    ("latin-1", "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg."),
    ("shift_jis", "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は日本の首都です。"),
    ("gb18030", "我能吞下玻璃而不伤身体。北京是中华人民共和国的首都。"),
    ("euc-kr", "다람쥐 헌 쳇바퀴에 타고파. 서울은 대한민국의 수도입니다."),
    ("utf-16-le", "Grüße aus Köln, 東京は日本の首都です。"),
    ("utf-16-be", "Grüße aus Köln, 東京は日本の首都です。"),
]


@pytest.mark.parametrize(("encoding", "text"), KNOWN)
def test_known_text_in_legacy_encodings(encoding: str, text: str) -> None:
    # issue 16: the detector's answer is taken (no cp1252 override); UTF-16 needs no BOM
    data = (text + "\n").encode(encoding)
    assert not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    parsed = parse(Path("note.txt"), data)
    assert parsed.text == text + "\n", parsed.encoding
    assert parsed.warning is None


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("cp1250", "Zażółć gęślą jaźń"),  # the one line: was 'Za¿ó³æ gêœl¹ jaŸñ'
        ("cp1251", "Привет, мир."),  # charset-normalizer's first pick: cp1125 '╧ЁштхҐ, ьшЁ.'
        ("cp1252", "Crème brûlée."),  # first pick: cp1006 (Urdu) 'Crﻟme brﻳlﻠe.'
        ("cp1252", "Le cœur déçu mais l'âme"),  # its only candidates are CJK: cp932 'Le c忖r'
        ("latin-1", "Falsches Üben von Xylophonmusik"),  # only CJK candidates: johab
    ],
)
def test_short_legacy_text_ties_are_broken_by_likelihood(encoding: str, text: str) -> None:
    assert decode(text.encode(encoding))[0] == text


def test_binary_with_zero_bytes_is_not_taken_for_utf16() -> None:
    import struct

    data = b"".join(struct.pack("<If", i, i / 3) for i in range(2000))  # little-endian records
    with pytest.raises(Unsupported, match="binary"):
        parse(Path("samples.dat"), data)
