"""A safe parser for the flat dict literals found in entity cells of community CSV files.

Cells look like `{'word': '비틀즈', 'start_idx': 24, 'end_idx': 26, 'type': 'ORG'}` (Python
repr) or the JSON spelling with double quotes. Only a flat mapping of string keys to strings,
numbers, booleans and None is accepted. Nothing is ever evaluated: anything else (a call, a
name, a nested container) is a `LiteralError`, so a cell holding code cannot run.
"""

from __future__ import annotations

import re
import unicodedata

MAX_CELL_CHARS = 64 * 1024  # an entity cell holds a few words and two numbers
MAX_NUMBER_CHARS = 100  # longer numbers are kept as `HugeNumber` (int() refuses > 4,300 digits)


class LiteralError(ValueError):
    """The text is not an acceptable flat dict literal; the message says why."""


class HugeNumber:
    """A number written with more than `MAX_NUMBER_CHARS` characters: no offset or label can be
    that long, so it is kept unconverted and the row is refused where a value is needed (a
    5,000-digit offset must be a bad row, not a crash in int())."""

    __slots__ = ("digits",)

    def __init__(self, token: str):
        self.digits = sum(ch.isdigit() for ch in token)

    def __repr__(self) -> str:
        return f"<a number with {self.digits:,} digits>"

    __str__ = __repr__


Scalar = str | int | float | bool | None | HugeNumber


def parse_json_number(token: str) -> int | float | HugeNumber:
    """`parse_int` for json decoders: integers as usual, over-long ones as `HugeNumber`."""
    return HugeNumber(token) if len(token) > MAX_NUMBER_CHARS else int(token)


# Strings take an optional u/U prefix (Python 2 dumps) and either quote; the two alternatives
# inside a string body are disjoint, so matching is linear (no catastrophic backtracking).
_STR = r"""[uU]?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_NUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NAME = r"None|True|False|null|true|false"
_VALUE = rf"{_STR}|{_NUM}|{_NAME}"
# Groups: key, then exactly one of (string value, number value, name value).
_PAIR = re.compile(rf"({_STR})\s*:\s*(?:({_STR})|({_NUM})|({_NAME}))", re.DOTALL)
_WHOLE = re.compile(
    rf"\s*\{{\s*(?:(?:{_STR})\s*:\s*(?:{_VALUE})\s*,\s*)*(?:(?:{_STR})\s*:\s*(?:{_VALUE})\s*)?\}}\s*\Z",
    re.DOTALL,
)
# Used only to explain a malformed cell: one token per match.
_TOKEN = re.compile(
    rf"\s*(?:(?P<str>{_STR})|(?P<num>{_NUM})|(?P<name>[A-Za-z_]\w*)|(?P<punct>[{{}}:,]))", re.DOTALL
)
_NAMES: dict[str, Scalar] = {
    "None": None, "True": True, "False": False, "null": None, "true": True, "false": False,
}
_ESCAPE = re.compile(
    r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]{1,100}\}|[0-7]{1,3}|.)", re.DOTALL
)
_SIMPLE_ESCAPES = {
    "\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b",
    "f": "\f", "v": "\v", "/": "/", "\n": "",  # "\/" is JSON's; backslash-newline is Python's
}
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _unescape_one(m: re.Match[str]) -> str:
    esc = m.group(1)
    head = esc[0]
    if head in "xuU" and len(esc) > 1:
        return chr(int(esc[1:], 16))
    if head == "N" and len(esc) > 1:
        try:
            return unicodedata.lookup(esc[2:-1])
        except KeyError:
            raise LiteralError(f"unknown character name in escape \\{esc}") from None
    if head in "01234567":
        return chr(int(esc, 8))
    # Unknown escapes keep their backslash, as in Python.
    return _SIMPLE_ESCAPES.get(esc, "\\" + esc)


def _decode_string(token: str) -> str:
    if token[0] in "uU":
        token = token[1:]
    body = token[1:-1]
    if "\\" not in body:  # the common case: nothing to unescape
        return body
    text = _ESCAPE.sub(_unescape_one, body)
    # JSON writes astral characters as surrogate pairs; join them into one code point.
    return _SURROGATE_PAIR.sub(_join_pair, text)


def _join_pair(m: re.Match[str]) -> str:
    return m.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _decode_number(token: str) -> int | float | HugeNumber:
    if len(token) > MAX_NUMBER_CHARS:
        return HugeNumber(token)
    if "." in token or "e" in token or "E" in token:
        return float(token)
    return int(token)


def _describe(text: str, pos: int) -> str:
    snippet = text[pos : pos + 30]
    return f"at character {pos + 1}: {snippet!r}" if snippet else "at the end"


def parse_dict_literal(text: str, max_chars: int = MAX_CELL_CHARS) -> dict[str, Scalar]:
    """Parse a flat `{key: scalar, ...}` literal (Python or JSON spelling) without evaluating it."""
    if len(text) > max_chars:
        raise LiteralError(f"cell is {len(text):,} characters; the limit is {max_chars:,}")
    if _WHOLE.match(text):
        # Fast path (every well-formed cell): the shape is already validated, so the pairs can be
        # pulled out in one C-level scan; each match consumes whole string tokens, so a match
        # can never start inside a string.
        out: dict[str, Scalar] = {}
        for key, sval, nval, name in _PAIR.findall(text):
            value: Scalar
            if sval:
                value = _decode_string(sval)
            elif nval:
                value = int(nval) if nval.isdigit() and len(nval) <= MAX_NUMBER_CHARS else _decode_number(nval)
            else:
                value = _NAMES[name]
            out[_decode_string(key)] = value
        return out
    # Slow path: tokenize to say exactly what is wrong.
    tokens: list[tuple[str, str, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip() == "":
                break
            where = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise LiteralError(f"not a dict literal: unexpected text {_describe(text, where)}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return _build(text, tokens)


def _build(text: str, tokens: list[tuple[str, str, int]]) -> dict[str, Scalar]:
    if not tokens:
        raise LiteralError("cell is empty")
    if tokens[0][1] != "{":
        raise LiteralError(f"not a dict literal: it should start with '{{' {_describe(text, tokens[0][2])}")
    out: dict[str, Scalar] = {}
    i, last = 1, len(tokens)

    def token(j: int) -> tuple[str, str, int]:
        if j >= last:
            raise LiteralError("not a dict literal: it ends before its closing '}'")
        return tokens[j]

    while True:
        kind, value, at = token(i)
        if value == "}":
            i += 1
            break
        if kind != "str":
            raise LiteralError(f"expected a quoted key {_describe(text, at)}")
        key = _decode_string(value)
        if token(i + 1)[1] != ":":
            raise LiteralError(f"expected ':' after key {key!r} {_describe(text, token(i + 1)[2])}")
        vkind, vtext, vat = token(i + 2)
        if vkind == "str":
            out[key] = _decode_string(vtext)
        elif vkind == "num":
            out[key] = _decode_number(vtext)
        elif vkind == "name" and vtext in _NAMES:
            out[key] = _NAMES[vtext]
        elif vkind == "name":
            # A bare name is where code would start (`__import__(...)`): refuse, never look it up.
            raise LiteralError(f"value of {key!r} is the bare name {vtext!r}; only literals are allowed")
        else:
            raise LiteralError(f"unsupported value for {key!r} {_describe(text, vat)}")
        sep = token(i + 3)[1]
        i += 4
        if sep == "}":
            break
        if sep != ",":
            raise LiteralError(f"expected ',' or '}}' after the value of {key!r} {_describe(text, token(i - 1)[2])}")
    if i != last:
        raise LiteralError(f"unexpected text after the closing '}}' {_describe(text, tokens[i][2])}")
    return out
