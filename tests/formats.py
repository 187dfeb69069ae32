"""Documents of every format lokal reads, each written by its format's own writer library
(python-docx, python-pptx, openpyxl, odfpy, ebooklib, the standard library's email; pandoc
for RTF and for DOCX footnotes), with the sentences a reader sees (:data:`SENTENCES`) and
the boilerplate a reader does not (:data:`BOILERPLATE`)."""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from lokal.chunking import SEPARATORS


def split_on_headings(text: str) -> list[str]:
    return re.split(SEPARATORS[0], text)


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "Acme Pump Manual, revision 7"
    section.footer.paragraphs[0].text = "Page footer: confidential"
    document.add_heading("Pump P-101", level=1)
    document.add_paragraph("To reset the pump, hold the red button for five seconds.")
    table = document.add_table(rows=3, cols=2)
    for r, values in enumerate(
        [("Code", "Meaning"), ("ERR-4711", "Pump overheated"), ("ERR-4712", "Valve stuck open")]
    ):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    document.add_heading("Service", level=2)
    document.add_paragraph("Call the service desk when the fault repeats.")
    merged = document.add_table(rows=1, cols=3)
    merged.cell(0, 0).merge(merged.cell(0, 1)).text = "Grease the bearings monthly."
    merged.cell(0, 2).text = "Check the seals yearly."
    return _saved(document)


def _saved(document: object) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _pandoc(markdown: str, to: str) -> bytes:
    import pypandoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"out.{to}"
        pypandoc.convert_text(markdown, to, format="md", outputfile=str(out), extra_args=["-s"])
        return out.read_bytes()


def docx_with_notes() -> bytes:
    return _pandoc(
        "# Valves\n\nThe inlet valve is replaced every five years.[^1]\n\n"
        "[^1]: The valve body is cast in brass.\n",
        "docx",
    )


RTF_SENTENCES = [
    "The compressor needs an oil change every 500 hours.",
    "Zażółć gęślą jaźń: the Polish pangram survives.",
    "Tokyo is 東京 in Japanese.",
    "Footnotes in RTF are kept where they stand.",
]


def rtf() -> bytes:
    a, b, c, d = RTF_SENTENCES
    return _pandoc(f"# Compressor memo\n\n{a}\n\n{b}\n\n{c}[^1]\n\n[^1]: {d}\n", "rtf")


def pptx() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = "Quarterly results"
    low = slide.shapes.add_textbox(Inches(1), Inches(6), Inches(6), Inches(1))
    low.text_frame.text = "The new plant opens in March."
    high = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    high.text_frame.text = "Revenue grew by nine percent in the third quarter."
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(3.5), Inches(4), Inches(1)).table
    for r, values in enumerate([("Region", "Growth"), ("North", "12%")]):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    slide.notes_slide.notes_text_frame.text = "Mention the safety record before the numbers."
    blank = deck.slides.add_slide(deck.slide_layouts[6])
    box = blank.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1))
    box.text_frame.text = "An untitled slide still has text."
    return _saved(deck)


def xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Parts"
    for values in (
        ("Part", "Stock", "Note"),
        ("Valve V-12", 40),
        ("Pump P-101", 3, "reorder at 2"),
    ):
        sheet.append(values)
    book.create_sheet("Suppliers").append(("Acme", "Springfield"))
    hidden = book.create_sheet("Prices")
    hidden.append(("internal price", 99))
    hidden.sheet_state = "hidden"
    return _saved(book)


def odt() -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.style import Footer, Header, MasterPage, PageLayout
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, List, ListItem, P

    document = OpenDocumentText()
    layout = PageLayout(name="page")
    document.automaticstyles.addElement(layout)
    master = MasterPage(name="Standard", pagelayoutname=layout)
    header = Header()
    header.addElement(P(text="Maintenance plan header"))
    master.addElement(header)
    master.addElement(Footer())
    document.masterstyles.addElement(master)
    document.text.addElement(H(outlinelevel=1, text="Maintenance plan"))
    document.text.addElement(P(text="Grease the bearings monthly."))
    document.text.addElement(H(outlinelevel=2, text="Yearly"))
    document.text.addElement(P(text="Replace the seals every spring."))
    steps = List()
    for step in ("Drain the pump.", "Open the housing."):
        item = ListItem()
        item.addElement(P(text=step))
        steps.addElement(item)
    document.text.addElement(steps)
    table = Table(name="Parts")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for values in (("Part", "Interval"), ("Bearing", "monthly")):
        tr = TableRow()
        for value in values:
            cell = TableCell()
            cell.addElement(P(text=value))
            tr.addElement(cell)
        table.addElement(tr)
    document.text.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def epub() -> bytes:
    from ebooklib import epub as ebook

    book = ebook.EpubBook()
    book.set_identifier("pump-book-1")
    book.set_title("The Pump Book")
    book.set_language("en")
    chapters = []
    for n, (title, body) in enumerate(
        [
            ("Introduction", "Pumps move water from <em>low</em> to high ground."),
            ("Maintenance", "A pump that is greased monthly lasts for decades."),
        ],
        1,
    ):
        chapter = ebook.EpubHtml(title=title, file_name=f"c{n}.xhtml", lang="en")
        chapter.content = f"<h1>{title}</h1><p>{body}</p>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(ebook.EpubNcx())
    book.add_item(ebook.EpubNav())  # a table of contents: <nav>, left out
    book.spine = ["nav", *chapters]
    buffer = io.BytesIO()
    ebook.write_epub(buffer, book)
    return buffer.getvalue()


def eml(*, html_only: bool = False) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Pump P-101 failed overnight"
    message["From"] = "Ana Novak <ana@example.com>"
    message["To"] = "service@example.com"
    message["Date"] = "Mon, 05 Jan 2026 07:30:00 +0100"
    if html_only:
        message.set_content(
            "<html><body><p>The pump <b>stopped</b> at three in the morning.</p></body></html>",
            subtype="html",
        )
        return message.as_bytes()
    message.set_content("The pump stopped at three in the morning.\nPlease send a technician.")
    message.add_alternative("<p>The pump <b>stopped</b> at three.</p>", subtype="html")
    message.add_attachment(
        xlsx(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename="pressure-log.xlsx",
    )
    message.add_attachment(
        b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="photo.png"
    )
    return message.as_bytes()


def html() -> bytes:
    return b"""<!doctype html><html><head><title>Pump P-101</title>
<style>body { font-family: sans-serif }</style><script>var analytics = "tracking-id";</script>
</head><body>
<header><a href="/">Acme Intranet</a> <input type="search" placeholder="Search"></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/pumps">All pumps</a></li></ul></nav>
<main><h1>Pump P-101</h1>
<p>Hold the <b>red</b> button for <em>five</em> seconds to reset the pump.</p>
<table><tr><th>Code</th><th>Meaning</th></tr><tr><td>ERR-4711</td><td>Pump overheated</td></tr>
</table>
<div hidden>Draft: not yet approved.</div>
</main>
<aside>Popular pages this week</aside>
<footer>Copyright Acme Industries</footer>
</body></html>"""


def make(suffix: str) -> bytes:
    return FACTORIES[suffix]()


def _blank_pdf() -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


FACTORIES: dict[str, Callable[[], bytes]] = {
    ".docx": docx,
    ".pptx": pptx,
    ".xlsx": xlsx,
    ".odt": odt,
    ".epub": epub,
    ".rtf": rtf,
    ".eml": eml,
    ".html": html,
    ".pdf": _blank_pdf,
}

#: What a reader of each document sees: every one must be found in the index.
SENTENCES: dict[str, list[str]] = {
    ".docx": [
        "To reset the pump, hold the red button for five seconds.",
        "ERR-4711 | Pump overheated",
        "Acme Pump Manual, revision 7",
        "Page footer: confidential",
    ],
    ".pptx": [
        "Revenue grew by nine percent in the third quarter.",
        "Mention the safety record before the numbers.",
    ],
    ".xlsx": ["Pump P-101 | 3 | reorder at 2", "Acme | Springfield"],
    ".odt": ["Grease the bearings monthly.", "Replace the seals every spring."],
    ".epub": ["Pumps move water from low to high ground.", "lasts for decades"],
    ".rtf": RTF_SENTENCES[1::2],
    ".eml": ["The pump stopped at three in the morning.", "pressure-log.xlsx"],
    ".html": [
        "Hold the red button for five seconds to reset the pump.",
        "ERR-4711 | Pump overheated",
    ],
}
#: What a reader does not see: none of it may be indexed.
BOILERPLATE: dict[str, list[str]] = {
    ".xlsx": ["internal price"],
    ".epub": ["Table of contents"],
    ".eml": ["Content-Transfer-Encoding", "base64"],
    ".rtf": ["fonttbl", "Helvetica"],
    ".html": [
        "tracking-id",
        "Acme Intranet",
        "All pumps",
        "Draft: not yet approved",
        "Popular pages",
        "Copyright Acme",
        "font-family",
    ],
}
