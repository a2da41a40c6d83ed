import numpy as np
import pytest

from rekit.data.labels import LabelMap
from rekit.data.schema import Entity, Record
from rekit.encoding.collate import Collator, bucket_batches
from rekit.encoding.markers import new_tokens
from rekit.encoding.tokenize import IGNORE_LABEL, REEncoder
from rekit.modeling.scratch import train_tokenizer

WORDS = ["가", "나", "다", "라", "마", "바", "사", "아", "자", "차", "카", "타", "파", "하", "회사", "사람", "서울", "대표", "설립", "태어났다"]  # noqa: E501 (Korean test data kept whole)


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 12)) + " @ # * ^ PER ORG [E1]" for _ in range(300)]
    return train_tokenizer(texts, 300, new_tokens("entity_marker") + new_tokens("typed_entity_marker", ["PER", "ORG"]))


def record(sentence, subj, obj, label=None):
    s, o = sentence.index(subj), sentence.rindex(obj)
    return Record("r", sentence, Entity(subj, s, s + len(subj), "PER"), Entity(obj, o, o + len(obj), "ORG"), label)


@pytest.mark.parametrize("scheme,subj_tok,obj_tok", [
    ("typed_entity_marker_punct", "@", "#"), ("entity_marker_punct", "@", "#"),
    ("entity_marker", "[E1]", "[E2]"), ("typed_entity_marker", "<S:PER>", "<O:ORG>"),
])
def test_positions_point_at_start_markers(tokenizer, scheme, subj_tok, obj_tok):
    r = record("가 나 사람 다 라 회사 마", "사람", "회사", "no_relation")
    f = REEncoder(tokenizer, scheme, 64).encode([r], LabelMap.builtin("klue-re"))
    toks = tokenizer.convert_ids_to_tokens(f.input_ids[0])
    assert toks[f.subj_pos[0]] == subj_tok
    assert toks[f.obj_pos[0]] == obj_tok
    assert f.labels == [0]


def test_none_scheme_points_at_entity_tokens_in_the_sentence(tokenizer):
    r = record("가 나 사람 다 라 회사 마", "사람", "회사")
    f = REEncoder(tokenizer, "none", 64).encode([r])
    toks = tokenizer.convert_ids_to_tokens(f.input_ids[0])
    # first segment "subj[SEP]obj", then the sentence; positions point into the sentence
    assert toks[:5] == ["[CLS]", "사람", "[SEP]", "회사", "[SEP]"]
    assert f.subj_pos[0] > 4 and toks[f.subj_pos[0]] == "사람"
    assert f.obj_pos[0] > 4 and toks[f.obj_pos[0]] == "회사"
    assert f.labels == [IGNORE_LABEL]


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_long_sentences_keep_both_entities(tokenizer, where):
    filler = " ".join(["가"] * 150)
    if where == "start":
        s = "사람 회사 " + filler
    elif where == "middle":
        s = filler + " 사람 나 회사 " + filler
    else:
        s = filler + " 사람 나 다 회사"
    r = record(s, "사람", "회사")
    enc = REEncoder(tokenizer, "typed_entity_marker_punct", 32)
    f = enc.encode([r])
    toks = tokenizer.convert_ids_to_tokens(f.input_ids[0])
    assert len(toks) <= 32
    assert toks[f.subj_pos[0]] == "@" and toks[f.obj_pos[0]] == "#"
    assert "사람" in toks and "회사" in toks
    assert enc.stats.windowed == 1


def test_far_apart_entities_are_spliced(tokenizer):
    s = "사람 " + " ".join(["가"] * 200) + " 회사"
    r = record(s, "사람", "회사")
    enc = REEncoder(tokenizer, "typed_entity_marker_punct", 24)
    f = enc.encode([r])
    toks = tokenizer.convert_ids_to_tokens(f.input_ids[0])
    assert len(toks) <= 24
    assert toks[f.subj_pos[0]] == "@" and toks[f.obj_pos[0]] == "#"
    assert "사람" in toks and "회사" in toks
    assert enc.stats.spliced == 1


def test_unknown_label_is_a_clear_error(tokenizer):
    from rekit.errors import DataError

    r = record("사람 회사", "사람", "회사", "org:unheard_of")
    with pytest.raises(DataError, match="org:unheard_of"):
        REEncoder(tokenizer, "none", 32).encode([r], LabelMap.builtin("klue-re"))


def test_bucket_batches_cover_every_index_once():
    lengths = list(np.random.default_rng(1).integers(5, 80, 1003))
    for rng in (np.random.default_rng(0), None):
        batches = bucket_batches(lengths, 32, rng)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(1003))
        assert all(len(b) == 32 for b in batches[:-1])
    # Randomised: two epochs differ, but each batch holds similar lengths.
    a = bucket_batches(lengths, 32, np.random.default_rng(0))
    b = bucket_batches(lengths, 32, np.random.default_rng(1))
    assert a != b
    spread = np.mean([np.ptp([lengths[i] for i in batch]) for batch in a[:-1]])
    assert spread < 10


def test_collator_pads_dynamically(tokenizer):
    rs = [record("가 사람 회사", "사람", "회사", "no_relation"), record("가 나 다 라 마 사람 바 회사", "사람", "회사", "per:title")]  # noqa: E501 (Korean test data kept whole)
    f = REEncoder(tokenizer, "typed_entity_marker_punct", 64).encode(rs, LabelMap.builtin("klue-re"))
    batch = Collator(f, tokenizer.pad_token_id, multiple_of=8)([0, 1])
    longest = max(f.lengths())
    assert batch["input_ids"].shape == (2, -(-longest // 8) * 8)
    assert batch["attention_mask"].sum(1).tolist() == f.lengths()
    assert batch["labels"].tolist() == [0, 4]
    assert (batch["input_ids"][0, f.lengths()[0]:] == tokenizer.pad_token_id).all()


def test_ddp_shares_of_a_step_are_padded_alike(tokenizer):
    """Under DDP each process collates its share of the step at the step's width, so all processes
    run (and replay) the same shape; under always_pad a share whose rows all fill the width widens
    every share."""
    from rekit.training.distributed import Dist

    sents = ["가 사람 회사", "가 나 다 라 마 바 사 아 사람 회사", "나 사람 회사", "가 나 다 라 마 바 사 아 사람 회사"]
    rs = [record(s, "사람", "회사", "no_relation") for s in sents]
    f = REEncoder(tokenizer, "typed_entity_marker_punct", 64).encode(rs, LabelMap.builtin("klue-re"))
    n = f.lengths()
    assert n[0] < n[1] == n[3] and n[2] < n[1]
    step = [0, 1, 2, 3]
    shards = Dist(0, 2, 0, "ddp").shards(step)
    assert shards == [[0, 2], [1, 3]] and shards[1] == Dist(1, 2, 0, "ddp").shard(step)
    col = Collator(f, tokenizer.pad_token_id, multiple_of=1)
    width = col.width(shards)
    assert width == n[1]
    assert {col(s, width=width)["input_ids"].shape for s in shards} == {(2, width)}
    assert col(shards[0])["input_ids"].shape[1] < width  # on its own the short share is narrower
    # always_pad: share [1, 3] fills the width exactly, so both shares get one more position.
    padded = Collator(f, tokenizer.pad_token_id, multiple_of=1, always_pad=True)
    assert padded.width(shards) == width + 1
    assert padded.width([[0, 1]]) == width  # row 0 leaves padding: no extra position
    assert Dist().shards(step) == [step]


def test_always_pad_leaves_a_padded_position_in_every_batch(tokenizer):
    rs = [record("가 사람 회사", "사람", "회사", "no_relation"), record("나 사람 회사", "사람", "회사", "per:title")]
    f = REEncoder(tokenizer, "typed_entity_marker_punct", 64).encode(rs, LabelMap.builtin("klue-re"))
    n = f.lengths()[0]
    assert f.lengths() == [n, n]
    assert Collator(f, tokenizer.pad_token_id)([0, 1])["attention_mask"].all()  # exact fit: no padding
    batch = Collator(f, tokenizer.pad_token_id, always_pad=True)([0, 1])
    assert batch["input_ids"].shape == (2, n + 1) and batch["attention_mask"].sum(1).tolist() == [n, n]
    wide = Collator(f, tokenizer.pad_token_id, multiple_of=8, always_pad=True)([0, 1])
    assert wide["input_ids"].shape[1] == -(-n // 8) * 8 + (8 if n % 8 == 0 else 0)
    assert not wide["attention_mask"].all()
