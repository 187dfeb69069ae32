"""E-mail (``.eml``, RFC 5322, the standard library's :mod:`email`): the subject as a heading,
who wrote to whom and when, the body as text (the plain part, else the HTML part read as
HTML), and the attachments named (file name and type), not read."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import cast

from .base import Parsed, blocks
from .html import html_text
from .text import decode

_HEADERS = ("From", "To", "Cc", "Date")


def eml(data: bytes) -> Parsed:
    message = BytesParser(policy=policy.default).parsebytes(data)
    subject = " ".join(str(message.get("Subject", "")).split())
    head = [f"{name}: {message[name]}" for name in _HEADERS if message.get(name)]
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        text = _content(cast(EmailMessage, body))
        if body.get_content_type() == "text/html":
            text = html_text(text)
    attachments = [_named(part) for part in message.iter_attachments()]
    parts = [f"# {subject}" if subject else "", "\n".join(head), text]
    if attachments:
        parts.append("Attachments: " + ", ".join(attachments))
    return Parsed(
        blocks(parts), "eml", metadata={"attachments": len(attachments)} if attachments else {}
    )


def _content(part: EmailMessage) -> str:
    """A text part's text: in its declared charset, else as lokal decodes any text."""
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError):  # an unknown or wrong charset label
        raw = part.get_payload(decode=True)
        return decode(raw)[0] if isinstance(raw, bytes) else ""


def _named(part: EmailMessage) -> str:
    kind = part.get_content_type()
    name = part.get_filename()
    if name:
        return f"{name} ({kind})"
    if kind == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and not isinstance(inner[0], str):
            subject = " ".join(str(inner[0].get("Subject", "")).split())
            return f"forwarded message {subject!r} ({kind})" if subject else f"message ({kind})"
    return f"unnamed {kind}"
