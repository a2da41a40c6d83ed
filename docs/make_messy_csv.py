"""Write a messy community-style train/test CSV pair, for docs/walkthrough.md.

The sentences come from rekit's synthetic Korean corpus (`rekit.data.synthetic`); the mess is
what community-annotated files really hold (issue 13): a pandas index column and a BOM, offsets
written as floats, some rows annotated with exclusive ends in an inclusive file, spans shifted
by one, byte offsets instead of character offsets, a misspelled entity, a duplicated row and a
cell cut off by a bad export. Deterministic for a seed.

    python docs/make_messy_csv.py --out messy          # messy/train.csv, messy/test.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

from rekit.data.schema import Entity, Record
from rekit.data.synthetic import make_splits

HEADER = ["", "id", "sentence", "subject_entity", "object_entity", "label", "source"]  # "" = pandas' index column


def cell(e: Entity, start: int | float | None = None, end: int | float | None = None, word: str | None = None) -> str:
    """An entity cell as pandas writes a dict (inclusive end), with any field overridden."""
    d = {"word": e.text if word is None else word, "start_idx": e.start if start is None else start,
         "end_idx": e.end - 1 if end is None else end, "type": e.type}
    return repr(d)


def byte_offsets(sentence: str, e: Entity) -> tuple[int, int]:
    """The span counted in UTF-8 bytes (what a tool working on bytes writes), inclusive end."""
    start = len(sentence[: e.start].encode("utf-8"))
    return start, start + len(e.text.encode("utf-8")) - 1


def misspell(word: str, sentence: str, rng: random.Random) -> str:
    """The word with one syllable replaced, so that it occurs nowhere in the sentence."""
    for _ in range(100):
        i = rng.randrange(len(word))
        typo = word[:i] + chr(rng.randrange(0xAC00, 0xD7A4)) + word[i + 1 :]
        if typo != word and typo not in sentence:
            return typo
    return word + "X"


def messy_rows(records: list[Record], rng: random.Random, counts: Counter, share: float) -> list[list[str]]:
    """CSV rows for `records`, with a `share` of them damaged in one of the ways above."""
    kinds = ["exclusive end", "shifted by one", "byte offsets", "float offsets"]
    rows: list[list[str]] = []
    for i, r in enumerate(records):
        subj, obj = cell(r.subject), cell(r.object)
        label = "100" if r.label is None else r.label
        if rng.random() < share:
            kind = rng.choice(kinds)
            counts[kind] += 1
            if kind == "exclusive end":  # another annotator's tool wrote Python-style ends
                subj = cell(r.subject, end=r.subject.end)
            elif kind == "shifted by one":
                obj = cell(r.object, start=r.object.start + 1, end=r.object.end)
            elif kind == "byte offsets":
                subj = cell(r.subject, *byte_offsets(r.sentence, r.subject))
            else:  # a column that once held a NaN: pandas writes 24.0 (harmless)
                obj = cell(r.object, start=float(r.object.start), end=float(r.object.end - 1))
        rows.append([str(i), str(i), r.sentence, subj, obj, label, r.source or ""])
    return rows


def damage(rows: list[list[str]], records: list[Record], rng: random.Random, counts: Counter, n_misspelled: int) -> None:
    """Problems no reader can repair: misspelled entities, a duplicated row, a cut-off cell."""
    picks = rng.sample(range(5, len(rows) - 5), n_misspelled + 2)
    for k in picks[:n_misspelled]:
        r = records[k]
        rows[k][3] = cell(r.subject, word=misspell(r.subject.text, r.sentence, rng))
        counts["misspelled entity"] += 1
    k = picks[n_misspelled]
    rows[k][4] = rows[k][4][: len(rows[k][4]) // 2]  # an export that cut the cell off
    counts["cut-off cell"] += 1
    k = picks[n_misspelled + 1]
    rows.insert(k + 1, list(rows[k]))  # the same row pasted twice (same id)
    counts["duplicated row"] += 1


def write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as f:  # utf-8-sig: Excel's BOM
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="messy", help="directory for train.csv and test.csv (default: messy)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--share", type=float, default=0.08, help="share of rows with a repairable problem")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    train, test = make_splits(seed=args.seed, n_train=args.n_train, n_test=args.n_test)
    test = [Record(r.id, r.sentence, r.subject, r.object, None, r.source) for r in test]  # a test set: no labels
    made = {}
    for name, records, misspelled in (("train", train, 2), ("test", test, 1)):
        counts: Counter = Counter()
        rows = messy_rows(records, rng, counts, args.share)
        damage(rows, records, rng, counts, misspelled)
        write(out / f"{name}.csv", rows)
        made[name] = {"rows": len(rows), **dict(sorted(counts.items()))}
        print(f"{out / f'{name}.csv'}: {len(rows)} rows; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return made


if __name__ == "__main__":
    main()
