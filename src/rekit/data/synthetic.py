"""A small synthetic Korean relation-extraction corpus for the demo and for tests.

Seven KLUE-RE relations plus no_relation. Every relation has its own templates with distinctive
wording (so a tiny model trained for a minute can learn it), and no_relation uses the *same*
entity-type pairs and overlapping vocabulary (so the entity types alone do not give the answer:
the type-pair baseline stays well below a model that reads the sentence). A few no_relation
templates even contain a relation's key phrase between the wrong pair of entities.

Sentences are built piece by piece; entity offsets are recorded as the pieces are appended (never
found by searching the finished string), end-exclusive like every `Record`.
"""

from __future__ import annotations

import random
import re

from rekit.data.schema import Entity, Record

# ---------------------------------------------------------------------------------------------
# Entity pools. Fictional organisations; common Korean given names (no well-known people, since
# the sentences invent facts about them); real city names.
PERSONS = (
    "김민준", "이서연", "박지훈", "최수아", "정우진", "강하은", "조현우", "윤지민", "장도윤",
    "임채원", "한승민", "오예린", "서준호", "신유나", "권태양", "황보람", "안재현", "송민서",
    "류진우", "홍다인", "전성훈", "고은비", "문태호", "양소율", "배준영", "백하린", "허윤석",
    "남지원", "노지아", "하동건", "김도현", "이하준", "박예준", "최서윤", "정지호", "유하린",
)
ORGS = (
    "한빛전자", "누리소프트", "미래건설", "푸른은행", "하나로통신", "새벽출판사", "동해제약",
    "별빛엔터테인먼트", "한결자동차", "가온바이오", "다온식품", "청명화학", "소망병원", "바른증권",
    "은하항공", "온누리물산", "세움디자인", "미리내게임즈", "해오름에너지", "두리유통",
    "한마음재단", "참빛교육", "늘봄제과", "나래반도체",
)
PLACES = (
    "서울", "부산", "대구", "인천", "광주", "대전", "울산", "수원", "전주", "제주", "춘천",
    "포항", "강릉", "목포", "청주", "경주", "안동", "여수", "원주", "창원",
)

RELATIONS: tuple[str, ...] = (
    "per:employee_of",
    "org:top_members/employees",
    "per:place_of_birth",
    "per:date_of_birth",
    "org:place_of_headquarters",
    "per:spouse",
    "org:founded",
)
NO_RELATION = "no_relation"
LABELS: tuple[str, ...] = (NO_RELATION, *RELATIONS)
NO_RELATION_SHARE = 0.3  # KLUE-RE train has 29.4 %

# Templates: "{S}" subject, "{O}" object; "{XS}"/"{XO}" a distractor entity of the subject's /
# object's type, never equal to S or O. "{S:은}" appends the particle that fits the word's last
# syllable (은/는, 이/가, 을/를, 과/와, 으로/로); the particle is outside the entity span.
# Groups are (subject type, object type, templates); a label's groups are drawn uniformly.
Group = tuple[str, str, tuple[str, ...]]

TEMPLATES: dict[str, tuple[Group, ...]] = {
    "per:employee_of": (
        ("PER", "ORG", (
            "{S:은} {O}에서 연구원으로 일하고 있다.",
            "{O}에 다니는 {S:은} 올해 과장으로 승진했다.",
            "{S:은} 2015년 {O}에 입사해 마케팅 업무를 맡고 있다.",
            "{O} 소속 엔지니어인 {S:은} 신제품 개발을 이끌었다.",
            "{O} 직원 {S:은} 회사 생활에 만족한다고 말했다.",
        )),
    ),
    "org:top_members/employees": (
        ("ORG", "PER", (
            "{S:은} {O:을} 새 대표이사로 선임했다.",
            "{S}의 회장인 {O:은} 기자간담회에서 올해 목표를 밝혔다.",
            "{S} {O} 대표는 신규 투자 계획을 발표했다.",
            "{S:은} 창립 이래 처음으로 {O:을} 최고경영자로 임명했다.",
        )),
    ),
    "per:place_of_birth": (
        ("PER", "LOC", (
            "{S:은} {O}에서 태어나 어린 시절부터 음악을 공부했다.",
            "{O}에서 태어난 {S:은} 대학 졸업 후 해외로 떠났다.",
            "{S}의 출생지는 {O}이다.",
            "{O} 태생인 {S:은} 고향에 대한 애정을 자주 드러냈다.",
        )),
    ),
    "per:date_of_birth": (
        ("PER", "DAT", (
            "{S:은} {O}에 태어났다.",
            "{O}생인 {S:은} 올해 새 작품으로 돌아왔다.",
            "배우 {S}({O} ~ )의 데뷔작은 단편영화였다.",
            "{S:은} {O} 출생으로 대학에서 경영학을 전공했다.",
        )),
    ),
    "org:place_of_headquarters": (
        ("ORG", "LOC", (
            "{O}에 본사를 둔 {S:은} 해외 시장 진출을 준비하고 있다.",
            "{S:은} 본사를 {O:으로} 이전했다.",
            "{S}의 본사는 {O}에 있다.",
            "{O}에 본사가 있는 {S:은} 지난해 매출이 크게 늘었다.",
        )),
    ),
    "per:spouse": (
        ("PER", "PER", (
            "{S:은} 지난해 {O:과} 결혼했다.",
            "{S}의 아내 {O:은} 유명한 화가이다.",
            "{O:과} 부부인 {S:은} 함께 방송에 출연했다.",
            "{S:은} 남편 {O:과} 함께 제주에서 살고 있다.",
            "{S:은} 배우자인 {O}에게 감사의 뜻을 전했다.",
        )),
    ),
    "org:founded": (
        ("ORG", "DAT", (
            "{S:은} {O}에 설립되었다.",
            "{O}에 창립한 {S:은} 국내 최대 규모로 성장했다.",
            "{S}의 설립일은 {O}이다.",
            "{O}에 문을 연 {S:은} 올해 창립 기념행사를 열었다.",
        )),
    ),
    NO_RELATION: (
        ("PER", "ORG", (
            "{S:은} {O}의 신제품 발표회를 취재했다.",
            "{S:은} {O:을} 상대로 소송을 제기했다.",
            "{S:은} {O}의 광고 모델 제안을 거절했다.",
            "{O}에서 일하는 {XS:은} {S}의 오랜 친구이다.",  # employee_of holds for XS, not S
        )),
        ("ORG", "PER", (
            "{S:은} {O}에게 감사패를 전달했다.",
            "{S}의 제품을 애용한다고 밝힌 {O:은} 광고 출연료를 기부했다.",
            "{S:은} {O}의 주장에 대해 사실이 아니라고 반박했다.",
        )),
        ("PER", "LOC", (
            "{S:은} 휴가 기간에 {O:을} 방문했다.",
            "{S:은} {O}에서 열린 공연에 참석했다.",
            "{S:은} 올해 {O}에서 팬 미팅을 열었다.",
            "{XO}에서 태어난 {S:은} {O}에서 첫 공연을 열었다.",  # born in XO, not O
        )),
        ("PER", "DAT", (
            "{S:은} {O}에 첫 앨범을 발표했다.",
            "{O}에 열린 회의에서 {S:은} 새 정책을 제안했다.",
            "{S:은} {O}에 은퇴를 선언했다.",
        )),
        ("ORG", "LOC", (
            "{S:은} {O}에서 신제품 설명회를 열었다.",
            "{S:은} {O} 지역 주민들에게 기부금을 전달했다.",
            "{S:은} {O}에 물류센터를 새로 짓기로 했다.",
        )),
        ("PER", "PER", (
            "{S:은} {O:과} 함께 영화에 출연했다.",
            "{S:은} 기자회견에서 {O:을} 비판했다.",
            "{S:은} {O}의 결혼식에 참석해 축가를 불렀다.",
        )),
        ("ORG", "DAT", (
            "{S:은} {O}에 신제품을 출시했다.",
            "{S:은} {O}에 주주총회를 열었다.",
            "{S:은} {O}에 창립 기념식을 열었다.",  # anniversary event, not the founding date
        )),
    ),
}

# Particles with two forms: (after a final consonant, after a vowel).
_PARTICLES = {"은": ("은", "는"), "이": ("이", "가"), "을": ("을", "를"), "과": ("과", "와"),
              "으로": ("으로", "로")}
_SLOT = re.compile(r"\{(S|O|XS|XO)(?::([^}]+))?\}")


def _final_consonant(word: str) -> int:
    """Index of the last syllable's final consonant (0 = none) for a Hangul syllable, else 0."""
    code = ord(word[-1]) - 0xAC00
    return code % 28 if 0 <= code < 11172 else 0


def attach(word: str, particle: str) -> str:
    """The form of `particle` that follows `word` (e.g. 서울+으로 -> 로, 부산+은 -> 은)."""
    if particle not in _PARTICLES:
        return particle
    with_final, without = _PARTICLES[particle]
    jong = _final_consonant(word)
    if particle == "으로" and jong == 8:  # final ㄹ takes 로 (서울로)
        return without
    return with_final if jong else without


def _random_date(rng: random.Random, lo: int, hi: int) -> str:
    year = rng.randint(lo, hi)
    style = rng.random()
    if style < 0.25:
        return f"{year}년"
    if style < 0.45:
        return f"{year}년 {rng.randint(1, 12)}월"
    return f"{year}년 {rng.randint(1, 12)}월 {rng.randint(1, 28)}일"


def _entity_text(rng: random.Random, etype: str, label: str, avoid: set[str]) -> str:
    if etype == "DAT":
        lo, hi = (1950, 2005) if label == "per:date_of_birth" else (1950, 2022)
        return _random_date(rng, lo, hi)
    pool = {"PER": PERSONS, "ORG": ORGS, "LOC": PLACES}[etype]
    while True:
        text = rng.choice(pool)
        if text not in avoid:
            return text


def _build(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill a template; return the sentence and each slot's (start, end) as appended."""
    parts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos, cursor = 0, 0
    for m in _SLOT.finditer(template):
        literal = template[cursor : m.start()]
        parts.append(literal)
        pos += len(literal)
        slot, particle = m.group(1), m.group(2)
        word = values[slot]
        spans[slot] = (pos, pos + len(word))
        parts.append(word)
        pos += len(word)
        if particle:
            suffix = attach(word, particle)
            parts.append(suffix)
            pos += len(suffix)
        cursor = m.end()
    parts.append(template[cursor:])
    return "".join(parts), spans


def make_corpus(n: int, seed: int = 0) -> list[Record]:
    """`n` labeled records, deterministic for `seed`, ids "demo-000000".., source "synthetic".

    ~30 % no_relation, the rest spread evenly over the seven relations. No two records share
    (sentence, subject span, object span), so slices of one corpus never leak into each other.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    records: list[Record] = []
    seen: set[tuple[str, int, int]] = set()
    while len(records) < n:
        label = NO_RELATION if rng.random() < NO_RELATION_SHARE else rng.choice(RELATIONS)
        s_type, o_type, templates = rng.choice(TEMPLATES[label])
        template = rng.choice(templates)
        s = _entity_text(rng, s_type, label, set())
        o = _entity_text(rng, o_type, label, {s})
        values = {"S": s, "O": o}
        if "{XS" in template:
            values["XS"] = _entity_text(rng, s_type, label, {s, o})
        if "{XO" in template:
            values["XO"] = _entity_text(rng, o_type, label, {s, o})
        sentence, spans = _build(template, values)
        key = (sentence, spans["S"][0], spans["O"][0])
        if key in seen:  # resample rather than duplicate
            continue
        seen.add(key)
        records.append(
            Record(
                id=f"demo-{len(records):06d}",
                sentence=sentence,
                subject=Entity(s, *spans["S"], type=s_type),
                object=Entity(o, *spans["O"], type=o_type),
                label=label,
                source="synthetic",
            )
        )
    return records


def make_splits(seed: int = 0, n_train: int = 1200, n_test: int = 300) -> tuple[list[Record], list[Record]]:
    """(train, test) slices of one corpus, disjoint; test keeps its labels so a demo can score."""
    corpus = make_corpus(n_train + n_test, seed)
    return corpus[:n_train], corpus[n_train:]
