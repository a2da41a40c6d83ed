"""Read any supported relation-extraction file into `Record`s, with a report of what happened.

Formats (see docs/data-formats.md): the KLUE-RE JSON release, the community CSV, the older
headerless TSV and rekit's JSON Lines. Every repaired or skipped row is in the `ReadReport`;
nothing is dropped silently. User mistakes raise `DataError`, never a bare exception.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path

from rekit.convert import coerce_fields
from rekit.data.formats import community_csv, jsonl, klue_json, legacy_tsv
from rekit.data.formats.detect import detect_format, normalize_format
from rekit.data.formats.fields import ENTITY_FIELDS, FIELDS, BadRow, Context, RawRow
from rekit.data.formats.source import check_file, decode_error, detect_encoding, iter_lines, open_text, read_head
from rekit.data.formats.spans import EXCLUSIVE, INCLUSIVE, describe_mismatch, file_span, relocate, to_entity, vote
from rekit.data.formats.writers import write_csv as _write_csv
from rekit.data.formats.writers import write_jsonl as _write_jsonl
from rekit.data.schema import Entity, Record
from rekit.errors import ConfigError, DataError

__all__ = ["ReadOptions", "ReadReport", "RecordReader", "RowIssue", "iter_records", "read_records",
           "write_csv", "write_jsonl"]

DETECT_ROWS = 64  # rows looked at to decide the offset convention
_DEFAULT_OFFSETS = {"klue-json": INCLUSIVE, "csv": INCLUSIVE, "tsv-legacy": INCLUSIVE, "jsonl": EXCLUSIVE}
_MISMATCH_HINT = "use --on-mismatch repair or skip"
_BAD_ROW_HINT = "use --on-bad-row skip to skip such rows"


@dataclass
class RowIssue:
    """One repaired or skipped row. `row` is the 1-based data record number (header excluded)."""

    row: int
    id: str | None
    problem: str
    action: str  # "repaired" | "skipped"


@dataclass
class ReadReport:
    path: str
    format: str  # "klue-json" | "csv" | "tsv-legacy" | "jsonl"
    rows: int = 0  # data rows seen
    records: int = 0  # records produced
    offsets: str = INCLUSIVE  # the end convention used: "inclusive" | "exclusive"
    repaired: list[RowIssue] = field(default_factory=list)
    skipped: list[RowIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        name = Path(self.path).name
        lines = [
            f"read {self.rows:,} rows from {name} ({self.format}, {self.offsets} end offsets): "
            f"{self.records:,} records, {len(self.repaired):,} repaired, {len(self.skipped):,} skipped"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        for issue in (self.repaired + self.skipped)[:3]:
            lines.append(f"  {issue.action} row {issue.row}: {issue.problem}")
        more = len(self.repaired) + len(self.skipped) - 3
        if more > 0:
            lines.append(f"  ... and {more:,} more (see the report's repaired/skipped lists)")
        return "\n".join(lines)


@dataclass
class ReadOptions:
    format: str | None = None  # None = auto: by extension, then by content
    on_mismatch: str = "error"  # "error" | "repair" | "skip": a span that doesn't match its text
    on_bad_row: str = "error"  # "error" | "skip": any other malformed row
    columns: dict[str, str] | None = None  # rekit field -> column (or JSON key) name
    entity_keys: dict[str, str] | None = None  # text/start/end/type -> key inside entity dicts
    offsets: str = "auto"  # "auto" | "inclusive" | "exclusive"
    limit: int | None = None  # read at most this many records
    encoding: str | None = None  # None = detect (UTF-8, or from a UTF-8/16/32 BOM)

    def __post_init__(self) -> None:
        coerce_fields(self, str)  # "64" -> 64, ["label=relation"] -> {"label": "relation"}; typed like the config
        if self.format is not None:
            normalize_format(self.format)  # an unknown name fails here, not at the first read
        _choice("on_mismatch", self.on_mismatch, ("error", "repair", "skip"))
        _choice("on_bad_row", self.on_bad_row, ("error", "skip"))
        _choice("offsets", self.offsets, ("auto", INCLUSIVE, EXCLUSIVE))
        _known_keys("columns", self.columns, FIELDS)
        _known_keys("entity_keys", self.entity_keys, ENTITY_FIELDS)
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0):
            raise ConfigError(f"limit must be a non-negative integer, got {self.limit!r}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _known_keys(name: str, mapping: dict[str, str] | None, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(mapping or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"{name} has unknown keys {unknown}; allowed: {', '.join(allowed)}")


class RecordReader(Iterator[Record]):
    """Streams `Record`s from a file; `report` is complete once iteration ends.

    Opening checks the file and detects encoding and format right away (so a missing file
    fails at once); rows are read lazily. Only the ids seen so far are kept (to catch
    duplicates), never the rows.
    """

    def __init__(self, path: str | Path, options: ReadOptions | None = None):
        self.path = Path(path)
        self.options = options or ReadOptions()
        check_file(self.path)
        self.encoding = detect_encoding(self.path, self.options.encoding)
        detected = detect_format(self.path, read_head(self.path, self.encoding), self.options.format)
        self.format, self._delimiter = detected.format, detected.delimiter
        self.report = ReadReport(path=str(path), format=self.format, offsets=_DEFAULT_OFFSETS[self.format])
        self._ctx = Context(str(path), self.options.columns, self.options.entity_keys, self.report.notes)
        if detected.note:
            self._ctx.note(detected.note)
        self._records: Iterator[Record] | None = None
        self._stream = None

    def __iter__(self) -> RecordReader:
        return self

    def __next__(self) -> Record:
        if self._records is None:
            self._records = self._run()
        return next(self._records)

    def close(self) -> None:
        if self._records is not None:
            self._records.close()  # type: ignore[attr-defined]
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline -------------------------------------------------------------------

    def _raw_rows(self) -> Iterator[RawRow | BadRow]:
        if self.format == "klue-json":
            self._stream = open_text(self.path, self.encoding)
            return klue_json.read_rows(self._stream, self._ctx)
        lines = iter_lines(self.path, self.encoding)
        if self.format == "csv":
            return community_csv.read_rows(lines, self._ctx, self._delimiter)
        if self.format == "tsv-legacy":
            return legacy_tsv.read_rows(lines, self._ctx)
        return jsonl.read_rows(lines, self._ctx)

    def _run(self) -> Iterator[Record]:
        try:
            yield from self._process(self._raw_rows())
        except UnicodeError as e:  # from a text stream (JSON, non-UTF-8 encodings)
            raise decode_error(self.path, self.encoding, e) from None
        except OSError as e:
            raise DataError(f"cannot read the file: {e.strerror or e}", path=str(self.path)) from None
        finally:
            if self._stream is not None:
                self._stream.close()

    def _process(self, raw: Iterator[RawRow | BadRow]) -> Iterator[Record]:
        report, opts = self.report, self.options
        head = list(islice(raw, DETECT_ROWS))
        self._decide_offsets(head)
        inclusive = report.offsets == INCLUSIVE
        first_row: dict[str, int] = {}
        unlabeled: Counter[str] = Counter()
        labeled = 0
        rows = chain(head, raw)
        for item in rows:
            if opts.limit is not None and report.records >= opts.limit:
                report.notes.append(f"stopped after {opts.limit:,} records (limit); the rest of the file was not read")
                break
            report.rows += 1
            if isinstance(item, BadRow):
                self._bad(item.row, item.id, _at(item.problem, item.line))
                continue
            if item.id in first_row:
                self._bad(item.row, item.id, _at(f"duplicate id (first used on row {first_row[item.id]})", item.line))
                continue
            rec = self._record(item, inclusive)
            if rec is None:
                continue
            first_row[item.id] = item.row
            if item.unlabeled is None:
                labeled += 1
            else:
                unlabeled[item.unlabeled] += 1
            report.records += 1
            yield rec
        self._label_notes(unlabeled, labeled)

    def _decide_offsets(self, head: list[RawRow | BadRow]) -> None:
        report = self.report
        if self.options.offsets != "auto":
            report.offsets = self.options.offsets
            return
        votes = Counter(vote(r) for r in head if isinstance(r, RawRow))
        inc, exc = votes[INCLUSIVE], votes[EXCLUSIVE]
        if inc != exc:
            report.offsets = INCLUSIVE if inc > exc else EXCLUSIVE
            if min(inc, exc):
                report.notes.append(f"offset convention: {inc} of the first rows fit inclusive ends, {exc} exclusive")
        elif head:
            report.notes.append(f"could not tell the offset convention from the first rows; assumed {report.offsets} ends")

    def _record(self, row: RawRow, inclusive: bool) -> Record | None:
        """The row as a `Record`, after span checks and repairs; None if it was skipped."""
        subject = to_entity(row.subject, row.sentence, inclusive)
        obj = to_entity(row.object, row.sentence, inclusive)
        if subject is not None and obj is not None:  # the common case
            return Record(row.id, row.sentence, subject, obj, row.label, row.source)
        return self._mismatched(row, inclusive)

    def _mismatched(self, row: RawRow, inclusive: bool) -> Record | None:
        entities: list[Entity] = []
        problems: list[str] = []
        for which, raw in (("subject", row.subject), ("object", row.object)):
            ent = to_entity(raw, row.sentence, inclusive)
            if ent is None:
                problem = describe_mismatch(which, raw, row.sentence, inclusive)
                mode = self.options.on_mismatch
                if mode == "error":
                    raise DataError(f"{_id(row.id)}{_at(problem, row.line)} ({_MISMATCH_HINT})", path=self.report.path, row=row.row)
                if mode == "skip":
                    self.report.skipped.append(RowIssue(row.row, row.id, _at(problem, row.line), "skipped"))
                    return None
                ent = relocate(raw, row.sentence)
                if ent is None:
                    self._bad(row.row, row.id, _at(f"{problem}; cannot repair: {which} text does not occur in the sentence", row.line))
                    return None
                problems.append(f"{problem}; repaired to {file_span(ent, inclusive)}")
            entities.append(ent)
        if problems:
            self.report.repaired.append(RowIssue(row.row, row.id, _at("; ".join(problems), row.line), "repaired"))
        return Record(row.id, row.sentence, entities[0], entities[1], row.label, row.source)

    def _bad(self, row: int, rid: str | None, problem: str) -> None:
        if self.options.on_bad_row == "error":
            raise DataError(f"{_id(rid)}{problem} ({_BAD_ROW_HINT})", path=self.report.path, row=row)
        self.report.skipped.append(RowIssue(row, rid, problem, "skipped"))

    def _label_notes(self, unlabeled: Counter[str], labeled: int) -> None:
        for why, n in unlabeled.most_common():
            if why in ("no label column", "no label key"):
                continue  # already noted once for the file
            self.report.notes.append(f"{why} treated as unlabeled ({_rows(n)})")
        if unlabeled and labeled:
            self.report.notes.append(
                f"mixed labels: {labeled:,} records are labeled and {sum(unlabeled.values()):,} unlabeled"
            )


def _id(rid: str | None) -> str:
    return "" if rid is None or not rid.strip() else f"id {rid!r}: "


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _at(problem: str, line: int | None) -> str:
    return problem if line is None else f"{problem} (line {line})"


def iter_records(path: str | Path, options: ReadOptions | None = None) -> RecordReader:
    """Stream records; the returned reader's `.report` is complete once it is exhausted."""
    return RecordReader(path, options)


def read_records(path: str | Path, options: ReadOptions | None = None) -> tuple[list[Record], ReadReport]:
    with RecordReader(path, options) as reader:
        records = list(reader)
    return records, reader.report


def write_jsonl(records: Iterable[Record], path: str | Path) -> None:
    """rekit's JSON Lines schema (`Record.to_dict()` per line, end-exclusive), written atomically."""
    _write_jsonl(records, path)


def write_csv(records: Iterable[Record], path: str | Path) -> None:
    """The community CSV layout (inclusive end offsets, dict literals), written atomically."""
    _write_csv(records, path)
