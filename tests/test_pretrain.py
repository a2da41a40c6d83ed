"""MLM pretraining: masking, the loop, and an encoder directory that `rekit train --model DIR` takes."""

import json

import pytest
import torch

from rekit.cli import main
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.modeling.mlm_data import IGNORE, MLMCollator, PackedRows, encode_corpus, unique_texts
from rekit.modeling.scratch import train_tokenizer
from rekit.training.pretrain import (
    PretrainSettings,
    _fit_budget,
    pretrain,
    scratch_mlm_model,
)

TEXTS = [r.sentence for r in make_splits(seed=0, n_train=200, n_test=0)[0]]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 1200)


def test_unique_texts_keeps_first_occurrence():
    assert unique_texts(["b", " a ", "b", "", "a"]) == ["b", "a"]


@pytest.mark.parametrize("masking", ["token", "word", "span"])
def test_masking_share_specials_and_labels(tok, masking):
    corpus = encode_corpus(tok, unique_texts(TEXTS), 64)
    col = MLMCollator(corpus, tok, 0.15, masking)
    gen = torch.Generator().manual_seed(0)
    chosen = total = 0
    for start in range(0, len(corpus), 32):
        idx = list(range(start, min(start + 32, len(corpus))))
        b = col(idx, gen)
        ids = torch.full_like(b["input_ids"], tok.pad_token_id)
        for row, i in enumerate(idx):
            ids[row, : len(corpus.input_ids[i])] = torch.as_tensor(corpus.input_ids[i])
        target = b["labels"] != IGNORE
        assert torch.equal(b["labels"][target], ids[target])  # labels are the original tokens
        special = torch.isin(ids, torch.as_tensor(tok.all_special_ids))
        assert not (target & special).any()  # [CLS], [SEP], [PAD] are never predicted
        assert torch.equal(b["input_ids"][~target], ids[~target])  # unchosen tokens untouched
        assert (b["input_ids"][target] == tok.mask_token_id).float().mean() > 0.6
        chosen += int(target.sum())
        total += int((~special).sum())
    assert 0.08 < chosen / total < 0.25


def test_packed_rows_pad_a_batch_like_a_row_loop(tok):
    corpus = encode_corpus(tok, unique_texts(TEXTS), 64)
    rows = PackedRows(corpus)
    for idx in ([0], [5, 1, 3], list(range(len(corpus)))[::-7]):
        ids, words, attention = rows.batch(idx, 8, tok.pad_token_id)
        width = -(-max(len(corpus.input_ids[i]) for i in idx) // 8) * 8
        assert ids.shape == words.shape == attention.shape == (len(idx), width)
        for row, i in enumerate(idx):
            n = len(corpus.input_ids[i])
            assert ids[row, :n].tolist() == corpus.input_ids[i] and words[row, :n].tolist() == corpus.word_ids[i]
            assert (ids[row, n:] == tok.pad_token_id).all() and (words[row, n:] == -1).all()
            assert attention[row].tolist() == [1] * n + [0] * (width - n)


def test_whole_word_masking_masks_every_piece_of_a_word(tok):
    corpus = encode_corpus(tok, unique_texts(TEXTS), 64)
    col = MLMCollator(corpus, tok, 0.3, "word")
    words = torch.full((len(corpus), 64), -1, dtype=torch.long)
    for i, w in enumerate(corpus.word_ids):
        words[i, : len(w)] = torch.as_tensor(w)
    chosen = col.choose(words, torch.Generator().manual_seed(1))
    multi = 0
    for i in range(len(corpus)):
        for w in set(corpus.word_ids[i]) - {-1}:
            picks = chosen[i][words[i] == w]
            assert picks.all() or not picks.any()
            multi += int(len(picks) > 1 and bool(picks.all()))
    assert multi > 10  # multi-piece words were masked whole


def test_fit_budget_shortens_the_schedule():
    assert _fit_budget(20, 1000, 0.1, 1000.0, 100) == (1000, None)  # 0.1 s/step: the 980 steps left fit
    total, note = _fit_budget(20, 1000, 0.1, 50.0, 100)
    assert total == 20 + 450 and "470 of 1,000" in note  # 90 % of 50 s at 0.1 s/step
    assert _fit_budget(220, 1000, 0.1, 0.0, 100)[0] == 221  # out of time: end at the next step


def test_pretrain_lowers_the_loss_and_saves_a_loadable_encoder(tok, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    model = scratch_mlm_model(tok, "tiny", 128)
    s = PretrainSettings(epochs=4, lr=2e-3, batch_size=32, max_length=64, valid_share=0.1, device="cpu", progress=False)
    summary = pretrain(model, tok, unique_texts(TEXTS), s, tmp_path / "enc", echo=lambda *_: None)
    rows = [json.loads(x) for x in (tmp_path / "enc" / "pretrain.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.5
    assert rows[-1]["valid_perplexity"] < rows[0]["valid_perplexity"]
    assert summary["steps"] == 4 * -(-summary["train_sentences"] // 32)  # 4 epochs of ceil(n / 32) steps
    encoder = AutoModel.from_pretrained(tmp_path / "enc")
    assert torch.equal(encoder.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight.cpu())
    assert len(AutoTokenizer.from_pretrained(tmp_path / "enc")) == len(tok)


def test_rekit_pretrain_then_train_on_the_encoder(tmp_path, capsys):
    from safetensors.torch import load_file

    train, test = make_splits(seed=2, n_train=160, n_test=40)
    write_csv(train, tmp_path / "train.csv")
    write_csv(test, tmp_path / "test.csv")
    enc = tmp_path / "enc"
    args = ["pretrain", "--train", str(tmp_path / "train.csv"), "--extra-text", str(tmp_path / "test.csv"),
            "--output", str(enc), "--scratch-size", "tiny", "--scratch-vocab-size", "900", "--epochs", "1",
            "--batch-size", "32", "--max-length", "64", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    n_texts = len({r.sentence for r in train + test})
    assert f"{n_texts:,} texts" in capsys.readouterr().out  # train and extra sentences, each once
    assert json.loads((enc / "pretrain.json").read_text())["texts"] == n_texts
    assert main(args) == 2  # a non-empty output directory is not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--model", str(enc), "--output", str(run),
                 "--folds", "2", "--only-folds", "0", "--epochs", "1", "--max-length", "64", "--no-progress"]) == 0
    # The fold model started from the pretrained weights (the training step moved them only a little).
    pre = load_file(str(enc / "model.safetensors"))
    fine = load_file(str(run / "fold-0" / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    delta = (fine["encoder.layer.0.attention.self.query.weight"] - pre[key]).abs().mean()  # transformers names (HF-loadable)
    assert delta < 0.1 * pre[key].abs().mean()


def test_morpheme_tokenizer_cuts_at_morphemes_and_loads_without_kiwi(tmp_path):
    pytest.importorskip("kiwipiepy")
    from transformers import AutoTokenizer

    mtok = train_tokenizer(TEXTS, 1500, kind="morpheme")
    pieces = mtok.tokenize("김민준은 한빛전자에서 일했다.")
    assert pieces[:2] == ["김민준", "##은"]  # name + particle, as the analyser cuts them
    assert "##에서" in pieces
    ids = mtok(TEXTS)["input_ids"]
    assert sum(i == mtok.unk_token_id for x in ids for i in x) == 0
    mtok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).tokenize("김민준은 한빛전자에서 일했다.") == pieces

