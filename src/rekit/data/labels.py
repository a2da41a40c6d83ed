"""Label maps: the built-in KLUE-RE orders, inference for other datasets, JSON on disk."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rekit.errors import DataError

# KLUE-RE v1.1, in the order the community competition uses for submissions (index 0..29).
KLUE_RE_LABELS: tuple[str, ...] = (
    "no_relation", "org:top_members/employees", "org:members", "org:product", "per:title",
    "org:alternate_names", "per:employee_of", "org:place_of_headquarters", "per:product",
    "org:number_of_employees/members", "per:children", "per:place_of_residence",
    "per:alternate_names", "per:other_family", "per:colleagues", "per:origin", "per:siblings",
    "per:spouse", "org:founded", "org:political/religious_affiliation", "org:member_of",
    "per:parents", "org:dissolved", "per:schools_attended", "per:date_of_death",
    "per:date_of_birth", "per:place_of_birth", "per:place_of_death", "org:founded_by",
    "per:religion",
)

# KLUE-RE v1 as officially released, in the order of the Hugging Face `klue` dataset's `re`
# config ClassLabel (huggingface/datasets, datasets/klue/klue.py). Integer labels in KLUE-RE JSON
# files exported from that dataset index into THIS order, not the competition order above.
KLUE_RE_OFFICIAL_ORDER: tuple[str, ...] = (
    "no_relation", "org:dissolved", "org:founded", "org:place_of_headquarters",
    "org:alternate_names", "org:member_of", "org:members", "org:political/religious_affiliation",
    "org:product", "org:founded_by", "org:top_members/employees",
    "org:number_of_employees/members", "per:date_of_birth", "per:date_of_death",
    "per:place_of_birth", "per:place_of_death", "per:place_of_residence", "per:origin",
    "per:employee_of", "per:schools_attended", "per:alternate_names", "per:parents",
    "per:children", "per:siblings", "per:spouse", "per:other_family", "per:colleagues",
    "per:product", "per:religion", "per:title",
)

# The older 42-class Korean label set (2021 competition, headerless TSV), in its label_type order.
LEGACY_KO_LABELS: tuple[str, ...] = (
    "관계_없음", "인물:배우자", "인물:직업/직함", "단체:모회사", "인물:소속단체", "인물:동료",
    "단체:별칭", "인물:출신성분/국적", "인물:부모님", "단체:본사_국가", "단체:구성원",
    "인물:기타_친족", "단체:창립자", "단체:주주", "인물:사망_일시", "단체:상위_단체",
    "단체:본사_주(도)", "단체:제작", "인물:사망_원인", "인물:출생_도시", "단체:본사_도시",
    "인물:자녀", "인물:제작", "단체:하위_단체", "인물:별칭", "인물:형제/자매/남매",
    "인물:출생_국가", "인물:출생_일시", "단체:구성원_수", "단체:자회사", "인물:거주_주(도)",
    "단체:해산일", "인물:거주_도시", "단체:창립일", "인물:종교", "인물:거주_국가", "인물:용의자",
    "인물:사망_도시", "단체:정치/종교성향", "인물:학교", "인물:사망_국가", "인물:나이",
)

BUILTIN: dict[str, tuple[tuple[str, ...], str]] = {
    "klue-re": (KLUE_RE_LABELS, "no_relation"),
    "klue-re-legacy": (LEGACY_KO_LABELS, "관계_없음"),
}
KNOWN_NO_RELATION = ("no_relation", "관계_없음", "NA", "Other", "no_relation ")


@dataclass(frozen=True)
class LabelMap:
    labels: tuple[str, ...]
    no_relation: str | None = "no_relation"
    name: str = "custom"

    def __post_init__(self):
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"label map has duplicate labels: {list(self.labels)}")
        if self.no_relation is not None and self.no_relation not in self.labels:
            raise DataError(
                f"no-relation label {self.no_relation!r} is not among the labels "
                f"({', '.join(self.labels[:8])}{', ...' if len(self.labels) > 8 else ''}); "
                "set it with --no-relation-label or 'none'"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def label2id(self) -> dict[str, int]:
        """Label -> id; built once (encoding looks up every row's label here)."""
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def no_relation_id(self) -> int | None:
        return None if self.no_relation is None else self.labels.index(self.no_relation)

    def encode(self, label: str) -> int:
        try:
            return self.label2id[label]
        except KeyError:
            raise DataError(f"label {label!r} is not in the model's label map") from None

    def save(self, path: str | Path) -> None:
        from rekit.io import atomic_write_text

        data = {"name": self.name, "no_relation": self.no_relation, "labels": list(self.labels)}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(tuple(data["labels"]), data.get("no_relation"), data.get("name", "custom"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read label map: {e}", path=str(path)) from None

    @classmethod
    def builtin(cls, name: str) -> LabelMap:
        if name not in BUILTIN:
            raise DataError(f"unknown built-in label set {name!r}; choose from {sorted(BUILTIN)}")
        labels, no_rel = BUILTIN[name]
        return cls(labels, no_rel, name)

    @classmethod
    def infer(cls, seen: Iterable[str], no_relation: str | None = "auto") -> LabelMap:
        """Pick the label map for a training set, deterministically.

        A subset of a built-in set keeps that set's full order (so submissions line up with the
        leaderboard). Otherwise: the no-relation label first, the rest sorted.
        `no_relation="auto"` picks a known no-relation name if present, else none.
        """
        seen_set = set(seen)
        if no_relation not in ("auto", None) and seen_set and no_relation not in seen_set:
            # Adding it would make a phantom class and score the data's real no-relation label
            # as a relation.
            shown = sorted(seen_set)
            more = f", ... ({len(shown)} in all)" if len(shown) > 20 else ""
            raise DataError(f"the no-relation label {no_relation!r} (--no-relation-label) is not a label of the data; "
                            f"labels seen: {', '.join(shown[:20])}{more}. Name one of them, or 'none' if the data "
                            "has no no-relation label")
        for name, (labels, no_rel) in BUILTIN.items():
            if seen_set and seen_set <= set(labels):
                if no_relation not in ("auto", no_rel):
                    return cls(labels, no_relation, name)
                return cls(labels, no_rel, name)
        if no_relation == "auto":
            no_relation = next((n for n in KNOWN_NO_RELATION if n in seen_set), None)
        rest = sorted(seen_set - {no_relation})
        labels = ((no_relation,) if no_relation is not None else ()) + tuple(rest)
        return cls(labels, no_relation, "inferred")
