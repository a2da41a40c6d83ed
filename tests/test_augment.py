"""Training-time augmentations: offsets stay exact, labels follow the swap, masking only in training."""

import random

import pytest
import torch

from rekit.config import RunConfig, parse_augments
from rekit.data.augment import augment_records, entity_pool, insert_punct, replace_entity, swap
from rekit.data.labels import LabelMap
from rekit.data.schema import Entity, Record
from rekit.data.synthetic import make_corpus
from rekit.encoding.tokenize import REEncoder
from rekit.modeling.backbone import build_model, load_tokenizer
from rekit.modeling.masking import protected_ids
from rekit.training.augmentation import training_features
from rekit.training.cv import tokenizer_corpus


def rec(label, sentence="김민준은 이서연의 남편이고 한빛전자 사장이다.", s=(0, 3, "PER"), o=(5, 8, "PER")):
    return Record("1", sentence, Entity(sentence[s[0]:s[1]], s[0], s[1], s[2]),
                  Entity(sentence[o[0]:o[1]], o[0], o[1], o[2]), label)


def test_swap_symmetric_inverse_and_not_applicable():
    r = rec("per:spouse")
    s = swap(r)
    assert (s.subject, s.object, s.label) == (r.object, r.subject, "per:spouse")
    assert swap(rec("per:parents")).label == "per:children"
    assert swap(rec("org:members")).label == "org:member_of"
    assert swap(rec("no_relation")) is None and swap(rec("per:title")) is None
    assert swap(rec("per:parents"), labels=["per:parents"]) is None  # implied label unknown to the model


def test_replaced_entities_and_inserted_punctuation_keep_exact_spans():
    records = make_corpus(200, seed=5)
    pool = entity_pool(records)
    rng = random.Random(0)
    changed = 0
    for r in records:
        for new in (replace_entity(r, pool, rng), insert_punct(r, rng)):
            if new is None:
                continue
            changed += 1
            assert new.subject.span_ok(new.sentence) and new.object.span_ok(new.sentence)
            assert (new.subject.type, new.object.type, new.label) == (r.subject.type, r.object.type, r.label)
    assert changed > 300
    # the replaced entity is another one of its type; punctuation never lands inside an entity
    r = rec("per:spouse")
    new = replace_entity(r, {"PER": ["박지훈", "김민준"], "ORG": []}, random.Random(1))
    assert {new.subject.text, new.object.text} & {"박지훈"}
    p = insert_punct(r, random.Random(3), ratio=1.0)
    assert len(p.sentence) > len(r.sentence) and p.subject.text == "김민준" and p.object.text == "이서연"


def test_nested_entities_are_not_replaced():
    r = rec("org:alternate_names", sentence="한빛전자공업은 회사다.", s=(0, 7, "ORG"), o=(0, 4, "ORG"))
    assert replace_entity(r, {"ORG": ["누리소프트"]}, random.Random(0)) is None


def test_parse_and_augment_records_counts():
    assert parse_augments("swap, entity") == ("swap", "entity") and parse_augments("none") == ()
    with pytest.raises(ValueError):
        parse_augments("rotate")
    records = make_corpus(300, seed=2)
    n_swappable = sum(swap(r) is not None for r in records)
    assert len(augment_records(records, ["swap"], 0.0, seed=0)) == n_swappable
    extra = augment_records(records, ["entity", "punct"], 0.5, seed=0)
    assert 150 < len(extra) < 450 and all(e.id.endswith(("~entity", "~punct")) for e in extra)


def test_fold_training_features_and_dynamic_masking():
    records = make_corpus(120, seed=1)
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 800,
                                   "max_length": 64, "augment": "punct,mask", "augment_prob": 1.0,
                                   "token_mask_prob": 0.5})
    lm = LabelMap.infer([r.label for r in records])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(records, cfg), ["PER", "ORG", "LOC", "DAT"])
    enc = REEncoder(tok, cfg.model.marker, cfg.model.max_length)
    feats = enc.encode(records, lm)
    tr = list(range(0, 120, 2))
    out = training_features(feats, tr, records, cfg.train, enc, lm)
    assert len(feats.subset(tr)) < len(out) <= 2 * len(tr)
    assert out.input_ids[: len(tr)] == feats.subset(tr).input_ids  # originals first, unchanged

    model = build_model(cfg.model, tok, lm, train=cfg.train)  # installs the masking hook
    seen = {}
    model.encoder.get_input_embeddings().register_forward_hook(lambda m, a, o: seen.__setitem__("ids", a[0].clone()))
    ids = torch.as_tensor([feats.input_ids[0]])
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), subj_pos=torch.tensor([feats.subj_pos[0]]),
                 obj_pos=torch.tensor([feats.obj_pos[0]]))
    model.train()
    torch.manual_seed(0)
    model(**batch)
    masked = seen["ids"][0] != ids[0]
    assert masked.any() and (seen["ids"][0][masked] == tok.mask_token_id).all()
    assert not torch.isin(ids[0][masked], torch.as_tensor(protected_ids(tok))).any()  # markers, specials kept
    model.eval()
    model(**batch)
    assert torch.equal(seen["ids"], ids)  # no masking at evaluation
