"""Texts from the inputs (card names, file names, LOG prefixes) made safe where they are shown.

Any of them can be crafted: a pcapng's if_name, an ``ip -j link`` name and a file name are
arbitrary bytes, so a terminal would obey the control sequences in them and a browser the
markup. Each output escapes them at its edge: the terminal through ``terminal_text``, the
pages' scripts through ``script_json`` (their HTML text is escaped by Jinja).
"""

from __future__ import annotations

import json
from typing import Any

#: How tshark (``format_text``) writes the ASCII controls that C names.
_C_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _escaped(char: str) -> str:
    if char in _C_ESCAPES:
        return _C_ESCAPES[char]
    code = ord(char)
    if code < 0x80:
        return f"\\{code:03o}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def terminal_text(text: str) -> str:
    """``text`` with every character that is not printable escaped as tshark does: ``\\n``,
    ``\\t`` and the other C escapes, other ASCII controls in octal (ESC is ``\\033``), the
    rest as ``\\uXXXX`` (C1 controls, bidi overrides, line separators, lone surrogates).
    Printable text, non-ASCII letters included, is unchanged, and so is the backslash."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def terminal_data(value: Any) -> Any:
    """Every string in a JSON-like value (keys too) through ``terminal_text``: for a report
    rendered to text by code that joins its lines itself, so an input's newline cannot start
    a line of its own there."""
    if isinstance(value, str):
        return terminal_text(value)
    if isinstance(value, dict):
        return {terminal_data(k): terminal_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(terminal_data(v) for v in value)
    return value


#: Characters that could end a <script> element or switch its parser state (``</script``,
#: ``<!--``, ``<script``) and the two line separators old JavaScript refused in strings; in
#: JSON they only occur inside strings, where their \\u escapes mean the same.
_SCRIPT_UNSAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside an HTML <script> element whatever its strings hold."""
    return json.dumps(value, default=str).translate(_SCRIPT_UNSAFE)
