"""Read any supported relation-extraction file into `Record`s, with a report of what happened.

Formats (see docs/data-formats.md): the KLUE-RE JSON release, the community CSV, the older
headerless TSV and rekit's JSON Lines. Every repaired or skipped row is in the `ReadReport`;
nothing is dropped silently. User mistakes raise `DataError`, never a bare exception.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import TextIO

from rekit.convert import coerce_fields
from rekit.data.formats import community_csv, jsonl, klue_json, legacy_tsv
from rekit.data.formats.detect import detect_format, normalize_format
from rekit.data.formats.fields import ENTITY_FIELDS, FIELDS, BadRow, Context, RawEntity, RawRow
from rekit.data.formats.source import check_file, decode_error, detect_encoding, iter_lines, open_text, read_head
from rekit.data.formats.spans import (
    EXCLUSIVE,
    INCLUSIVE,
    clamp,
    describe_mismatch,
    file_offsets,
    file_span,
    relocate,
    to_entity,
    unambiguous_repair,
    vote,
)
from rekit.data.formats.writers import write_csv as _write_csv
from rekit.data.formats.writers import write_jsonl as _write_jsonl
from rekit.data.schema import Entity, Record
from rekit.errors import ConfigError, DataError
from rekit.io import atomic_write_text

__all__ = ["PredictionRows", "ReadOptions", "ReadReport", "RecordReader", "RowIssue", "Unreadable", "iter_records",
           "options_from_config", "read_for_prediction", "read_records", "write_csv", "write_jsonl"]

DETECT_ROWS = 64  # rows looked at to decide the offset convention
_DEFAULT_OFFSETS = {"klue-json": INCLUSIVE, "csv": INCLUSIVE, "tsv-legacy": INCLUSIVE, "jsonl": EXCLUSIVE}
_MISMATCH_HINT = "use --on-mismatch repair or skip"
_BAD_ROW_HINT = "use --on-bad-row skip to skip such rows"
MISMATCH_MODES = ("error", "auto", "repair", "skip")
BAD_ROW_MODES = ("error", "auto", "skip")


@dataclass
class RowIssue:
    """One repaired, skipped or flagged row. `row` is the 1-based data record number (header
    excluded). `spans` holds, for each entity whose span was wrong, its text and the span
    before and after (None: not placed), in the file's own end convention."""

    row: int
    id: str | None
    problem: str
    action: str  # "repaired" | "skipped" | and for prediction: "clamped" | "unreadable" | "kept"
    spans: dict[str, dict] = field(default_factory=dict)


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
    flagged: list[RowIssue] = field(default_factory=list)  # prediction: kept rows with a guessed span or none

    @property
    def issues(self) -> list[RowIssue]:
        return sorted(self.repaired + self.skipped + self.flagged, key=lambda i: i.row)

    def summary(self, report_path: str | Path | None = None) -> str:
        """One line of counts, the notes, the first few issues; `report_path` is where the full
        report is kept (named when some issues are not shown)."""
        name = Path(self.path).name
        flagged = f", {len(self.flagged):,} flagged" if self.flagged else ""
        lines = [
            f"read {self.rows:,} rows from {name} ({self.format}, {self.offsets} end offsets): "
            f"{self.records:,} records, {len(self.repaired):,} repaired, {len(self.skipped):,} skipped{flagged}"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        issues = self.issues
        for issue in issues[:3]:
            lines.append(f"  {issue.action} row {issue.row}: {issue.problem}")
        if len(issues) > 3:
            where = f" (every row is listed in the read report {report_path})" if report_path else ""
            lines.append(f"  ... and {len(issues) - 3:,} more{where}")
        elif issues and report_path:
            lines.append(f"  read report: {report_path}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "file": self.path, "format": self.format, "offsets": self.offsets,
            "counts": {"rows": self.rows, "records": self.records, "repaired": len(self.repaired),
                       "skipped": len(self.skipped), "flagged": len(self.flagged)},
            "notes": list(self.notes),
            "repaired": [asdict(i) for i in self.repaired],
            "skipped": [asdict(i) for i in self.skipped],
            "flagged": [asdict(i) for i in self.flagged],
        }

    def save(self, path: str | Path) -> None:
        """The whole report as JSON (every repaired, skipped and flagged row), written atomically."""
        d = self.to_dict()
        lists = {k: d.pop(k) for k in ("repaired", "skipped", "flagged")}
        head = json.dumps(d, indent=1, ensure_ascii=False)[:-2]  # without the closing "\n}"
        parts = [head]
        for key, issues in lists.items():  # one row per line: easy to read, grep and diff
            rows = ",\n".join("  " + json.dumps(i, ensure_ascii=False) for i in issues)
            parts.append(f' "{key}": [\n{rows}\n ]' if issues else f' "{key}": []')
        atomic_write_text(path, ",\n".join(parts) + "\n}\n")


@dataclass
class ReadOptions:
    format: str | None = None  # None = auto: by extension, then by content
    # A span that doesn't match its text: "error"; "auto" (repair it when the right place is
    # certain, else it is a bad row); "repair" (also take the nearest of several occurrences);
    # "skip" (drop the row).
    on_mismatch: str = "error"
    # Any other malformed row (and, with "auto", a span that can't be repaired): "error";
    # "auto" (skip such rows while they are at most `max_skip_share` of the rows read, else a
    # DataError at the end naming the first ones); "skip" (skip any number).
    on_bad_row: str = "error"
    columns: dict[str, str] | None = None  # rekit field -> column (or JSON key) name
    entity_keys: dict[str, str] | None = None  # text/start/end/type -> key inside entity dicts
    offsets: str = "auto"  # "auto" | "inclusive" | "exclusive"
    limit: int | None = None  # read at most this many records
    encoding: str | None = None  # None = detect (UTF-8, or from a UTF-8/16/32 BOM)
    max_skip_share: float = 0.01  # on_bad_row="auto": the largest share of rows skipped without an error

    def __post_init__(self) -> None:
        coerce_fields(self, str)  # "64" -> 64, ["label=relation"] -> {"label": "relation"}; typed like the config
        if self.format is not None:
            normalize_format(self.format)  # an unknown name fails here, not at the first read
        _choice("on_mismatch", self.on_mismatch, MISMATCH_MODES)
        _choice("on_bad_row", self.on_bad_row, BAD_ROW_MODES)
        _choice("offsets", self.offsets, ("auto", INCLUSIVE, EXCLUSIVE))
        _known_keys("columns", self.columns, FIELDS)
        _known_keys("entity_keys", self.entity_keys, ENTITY_FIELDS)
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0):
            raise ConfigError(f"limit must be a non-negative integer, got {self.limit!r}")
        share = self.max_skip_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ConfigError(f"max_skip_share must be a share between 0 and 1 (0.01 = 1 %), got {share!r}")


def options_from_config(d, limit: int | None = None) -> ReadOptions:
    """ReadOptions from a `DataConfig` (or anything with its field names): `strict` means stop at
    the first problem row, as `on_mismatch` and `on_bad_row` "error" do."""
    on_mismatch, on_bad_row = d.on_mismatch, d.on_bad_row
    if getattr(d, "strict", False):
        loose = [f"--{k.replace('_', '-')} {v}" for k, v in (("on_mismatch", on_mismatch), ("on_bad_row", on_bad_row))
                 if v not in ("auto", "error")]
        if loose:
            raise ConfigError(f"--strict stops at the first problem row; it cannot be combined with {' and '.join(loose)}")
        on_mismatch = on_bad_row = "error"
    return ReadOptions(format=d.format, on_mismatch=on_mismatch, on_bad_row=on_bad_row, columns=d.columns or None,
                       entity_keys=d.entity_keys or None, offsets=d.offsets, limit=limit,
                       max_skip_share=getattr(d, "max_skip_share", 0.01))


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

    `keep_all=True` is the prediction mode (`read_for_prediction`): no row is dropped. Unless
    the options say "error", a wrong span is repaired (else clamped to the sentence), a
    duplicate id is kept, and a row that can't be read at all comes out as an `Unreadable`.
    """

    def __init__(self, path: str | Path, options: ReadOptions | None = None, keep_all: bool = False):
        self.path = Path(path)
        self.options = options or ReadOptions()
        self.keep_all = keep_all
        self._auto_skipped = 0  # rows skipped under on_bad_row="auto" (bounded by max_skip_share)
        check_file(self.path)
        self.encoding = detect_encoding(self.path, self.options.encoding)
        detected = detect_format(self.path, read_head(self.path, self.encoding), self.options.format)
        self.format, self._delimiter = detected.format, detected.delimiter
        self.report = ReadReport(path=str(path), format=self.format, offsets=_DEFAULT_OFFSETS[self.format])
        self._ctx = Context(str(path), self.options.columns, self.options.entity_keys, self.report.notes)
        if detected.note:
            self._ctx.note(detected.note)
        self._records: Iterator[Record | Unreadable] | None = None
        self._stream: TextIO | None = None

    def __iter__(self) -> RecordReader:
        return self

    def __next__(self) -> Record:  # (or an Unreadable, with keep_all)
        if self._records is None:
            self._records = self._run()
        return next(self._records)  # type: ignore[return-value]

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

    def _run(self) -> Iterator[Record | Unreadable]:
        try:
            yield from self._process(self._raw_rows())
        except UnicodeError as e:  # from a text stream (JSON, non-UTF-8 encodings)
            raise decode_error(self.path, self.encoding, e) from None
        except OSError as e:
            raise DataError(f"cannot read the file: {e.strerror or e}", path=str(self.path)) from None
        finally:
            if self._stream is not None:
                self._stream.close()

    def _process(self, raw: Iterator[RawRow | BadRow]) -> Iterator[Record | Unreadable]:
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
                yield from self._unreadable(item.row, item.id, _at(item.problem, item.line))
                continue
            if item.id in first_row:
                problem = _at(f"duplicate id (first used on row {first_row[item.id]})", item.line)
                if not self.keep_all or self.options.on_bad_row == "error":
                    self._bad(item.row, item.id, problem)
                    continue
                report.flagged.append(RowIssue(item.row, item.id, problem, "kept"))
            rec = self._record(item, inclusive)
            if rec is None:
                continue
            first_row.setdefault(item.id, item.row)
            if item.unlabeled is None:
                labeled += 1
            else:
                unlabeled[item.unlabeled] += 1
            report.records += 1
            yield rec
        self._label_notes(unlabeled, labeled)
        self._check_skip_share()

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
        spans: dict[str, dict] = {}
        action = "repaired"
        for which, raw in (("subject", row.subject), ("object", row.object)):
            ent = to_entity(raw, row.sentence, inclusive)
            if ent is not None:
                entities.append(ent)
                continue
            problem = describe_mismatch(which, raw, row.sentence, inclusive)
            if self.options.on_mismatch == "error":
                raise DataError(f"{_id(row.id)}{_at(problem, row.line)} ({_MISMATCH_HINT})", path=self.report.path, row=row.row)
            ent, how, why = self._fix(raw, row.sentence, inclusive)
            spans[which] = {"text": raw.text, "before": [raw.start, raw.end],
                            "after": None if ent is None else list(file_offsets(ent, inclusive))}
            if how == "skipped":
                self.report.skipped.append(RowIssue(row.row, row.id, _at(problem, row.line), "skipped", spans))
                return None
            if ent is None:
                self._bad(row.row, row.id, _at(f"{problem}; cannot repair: {why}", row.line), spans)
                return None
            span = file_span(ent, inclusive)
            problems.append(f"{problem}; {'clamped' if how == 'clamped' else 'repaired'} to {span} ({why})")
            action = "clamped" if how == "clamped" else action
            entities.append(ent)
        issue = RowIssue(row.row, row.id, _at("; ".join(problems), row.line), action, spans)
        (self.report.flagged if action == "clamped" else self.report.repaired).append(issue)
        return Record(row.id, row.sentence, entities[0], entities[1], row.label, row.source)

    def _fix(self, raw: RawEntity, sentence: str, inclusive: bool) -> tuple[Entity | None, str, str]:
        """(entity or None, "repaired" | "clamped" | "skipped" | "bad", why) for a wrong span."""
        mode = self.options.on_mismatch
        if self.keep_all:  # prediction: every row is predicted, with the best span there is
            ent, why = unambiguous_repair(raw, sentence, inclusive)
            if ent is not None:
                return ent, "repaired", why
            near = relocate(raw, sentence)
            if near is not None:
                return near, "repaired", f"{why}: took the one nearest the given start"
            return clamp(raw, sentence, inclusive), "clamped", f"{why}; the given offsets were kept, within the sentence"
        if mode == "skip":
            return None, "skipped", ""
        if mode == "repair":
            near = relocate(raw, sentence)
            return near, "repaired" if near else "bad", "the occurrence nearest the given start" if near else (
                "the entity text does not occur in the sentence")
        ent, why = unambiguous_repair(raw, sentence, inclusive)
        return ent, "repaired" if ent else "bad", why

    def _unreadable(self, row: int, rid: str | None, problem: str) -> Iterator[Unreadable]:
        """A row that is not a record: in prediction, kept in place (unless on_bad_row is error)."""
        if not self.keep_all or self.options.on_bad_row == "error":
            self._bad(row, rid, problem)
            return
        self.report.flagged.append(RowIssue(row, rid, problem, "unreadable"))
        yield Unreadable(row, rid or "", problem)

    def _bad(self, row: int, rid: str | None, problem: str, spans: dict | None = None) -> None:
        mode = self.options.on_bad_row
        if mode == "error":
            raise DataError(f"{_id(rid)}{problem} ({_BAD_ROW_HINT})", path=self.report.path, row=row)
        self.report.skipped.append(RowIssue(row, rid, problem, "skipped", spans or {}))
        self._auto_skipped += mode == "auto"

    def _check_skip_share(self) -> None:
        """on_bad_row="auto": a few unusable rows are skipped, many are an error (a wrong format?)."""
        n, rows, share = self._auto_skipped, self.report.rows, self.options.max_skip_share
        if not n or n <= share * rows:
            return
        first, *others = self.report.skipped[:3]
        more = "; next: " + "; ".join(f"row {i.row}: {i.problem}" for i in others) if others else ""
        raise DataError(
            f"{_id(first.id)}{first.problem}; {n:,} of {rows:,} rows ({n / rows:.1%}) cannot be read or repaired, more "
            f"than the {share * 100:g} % skipped without asking (--max-skip-share){more}. Fix them, pass "
            "--max-skip-share with a larger share, --on-bad-row skip to skip them all, or --strict to stop at the first",
            path=self.report.path, row=first.row,
        )

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


@dataclass(frozen=True)
class Unreadable:
    """A row `read_for_prediction` could not turn into a record, kept in its place."""

    row: int
    id: str  # "" when the row's id could not be read either
    problem: str


@dataclass
class PredictionRows:
    """Every data row of a file, in order: a `Record`, or an `Unreadable` where none could be made."""

    rows: list[Record | Unreadable]
    report: ReadReport

    @property
    def records(self) -> list[Record]:
        return [r for r in self.rows if isinstance(r, Record)]

    @property
    def unreadable(self) -> list[Unreadable]:
        return [r for r in self.rows if isinstance(r, Unreadable)]


def read_for_prediction(path: str | Path, options: ReadOptions | None = None) -> PredictionRows:
    """Read a file to predict: one item per data row, same order, nothing dropped.

    Unlike training, a wrong span is never a reason to lose a row: it is repaired when the place
    is certain, else moved to the nearest occurrence of the entity text, else kept at its given
    offsets clamped to the sentence (flagged "clamped"). Duplicate ids are kept (flagged), and a
    row that can't be read at all is an `Unreadable` (flagged). With on_mismatch / on_bad_row
    "error" (`--strict`) the first such row is a DataError instead.
    """
    with RecordReader(path, options, keep_all=True) as reader:
        rows = list(reader)
    return PredictionRows(rows, reader.report)  # type: ignore[arg-type]


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
