"""Which format a file is in: the explicit choice, else the extension, else its first line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rekit.data.formats.fields import FIELD_ALIASES
from rekit.errors import ConfigError

FORMATS = ("klue-json", "csv", "tsv-legacy", "jsonl")
_SYNONYMS = {
    "json": "klue-json", "klue": "klue-json", "klue-json": "klue-json",
    "csv": "csv", "tsv": "tsv-legacy", "tsv-legacy": "tsv-legacy", "legacy": "tsv-legacy",
    "jsonl": "jsonl", "ndjson": "jsonl", "json-lines": "jsonl",
}
_LEGACY_TABS = 8  # nine columns


@dataclass(frozen=True)
class Detected:
    format: str
    delimiter: str = ","
    note: str | None = None


def normalize_format(name: str) -> str:
    fmt = _SYNONYMS.get(name.strip().lower())
    if fmt is None:
        raise ConfigError(f"unknown data format {name!r}; choose from {', '.join(FORMATS)}")
    return fmt


def detect_format(path: Path, head: str, requested: str | None) -> Detected:
    ext = path.suffix.lower()
    text = head.lstrip()
    first_line = text.split("\n", 1)[0].rstrip("\r")
    header_delim = _header_delimiter(first_line)
    if requested:
        fmt = normalize_format(requested)
        if fmt == "csv":
            return Detected("csv", header_delim or ("\t" if ext == ".tsv" else ","))
        return Detected(fmt)
    if ext in (".jsonl", ".ndjson"):
        return Detected("jsonl")
    if ext == ".json":
        if text.startswith("{") and _one_object_per_line(text):
            return Detected("jsonl", note="the .json file holds one object per line: read as JSON Lines")
        return Detected("klue-json")
    if ext == ".csv":
        if header_delim:
            return Detected("csv", header_delim)
        if first_line.count("\t") == _LEGACY_TABS:
            return Detected("tsv-legacy", note="no header and nine tab-separated fields: read as legacy TSV")
        return Detected("csv")
    # .tsv, .txt or anything else: look at the content.
    if text.startswith("["):
        return Detected("klue-json")
    if text.startswith("{"):
        return Detected("jsonl")
    if header_delim:
        note = "tab-separated with a header: read as CSV-style columns" if header_delim == "\t" else None
        return Detected("csv", header_delim, note)
    if "\t" in first_line:
        return Detected("tsv-legacy")
    return Detected("csv")


def _header_delimiter(line: str) -> str | None:
    """The delimiter under which `line` looks like a header naming a sentence column."""
    sentence_names = set(FIELD_ALIASES["sentence"])
    for delim in (",", "\t", ";"):
        names = {cell.strip().strip('"').strip().lower() for cell in line.split(delim)}
        if len(names) > 2 and names & sentence_names:
            return delim
    return None


def _one_object_per_line(text: str) -> bool:
    lines = [ln for ln in text.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(json.loads(lines[0]), dict)
    except ValueError:
        return False
