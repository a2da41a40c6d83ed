"""Fully offline models: a tokenizer trained on the data + a randomly initialised BERT.

Two tokenizer kinds, both saved as an ordinary WordPiece tokenizer (no analyser needed to load
or run it):
  wordpiece  WordPiece trained on the raw text (frequency-driven pieces);
  morpheme   the vocabulary is built from Korean morphemes (kiwipiepy, `pip install rekit[morpheme]`):
             each eojeol is cut at morpheme boundaries, word-initial morphemes become pieces and
             later ones "##" continuations ("비틀즈가" -> 비틀즈 ##가), as KLUE's own tokenizers
             segment morphemes before sub-words. At run time WordPiece's longest-match over that
             vocabulary reproduces the morpheme cuts for every known morpheme.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from rekit.errors import ConfigError

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MARKER_CHARS = list("@#*^[]<>/:")
TOKENIZERS = ("wordpiece", "morpheme")

# (layers, hidden, heads, intermediate). tiny: CPU demos and tests; small: offline KLUE-RE on a
# CPU; medium: offline KLUE-RE with MLM pretraining on a GPU; base: the BERT-base shape (what
# a hub model of that size would have).
SIZES = {
    "tiny": (2, 128, 2, 512),
    "small": (4, 256, 4, 1024),
    "medium": (6, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int, extra_special: Sequence[str] = (), kind: str = "wordpiece"):
    """Train a BERT-style tokenizer (`kind`: wordpiece or morpheme) as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if kind == "morpheme":
        tok = _bert_wordpiece(morpheme_vocab(list(texts), vocab_size))
    elif kind == "wordpiece":
        tok = _bert_wordpiece(wordpiece_vocab(list(texts), vocab_size))
    else:
        raise ConfigError(f"unknown scratch tokenizer {kind!r}; use one of {', '.join(TOKENIZERS)}")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    if extra_special:
        fast.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return fast


def _bert_wordpiece(vocab: dict[str, int]) -> Tokenizer:
    """A WordPiece tokenizer over `vocab` with BERT's splitting and the special tokens."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.NFC()  # Korean text mixes composed and decomposed Hangul
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(SPECIAL)
    return tok


def wordpiece_vocab(texts: Sequence[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary trained on `texts`, the same for the same texts in every process.

    The tokenizers trainer numbers each '##x' continuation piece in the order it meets it while
    walking a hash map whose order changes with every process; merges that tie on frequency
    are broken by those numbers, so two trainings of the same text gave different vocabularies
    (even different sizes, as different merges can make the same piece). Registering every
    continuation piece up front, sorted, fixes the numbering and with it the whole training.
    """
    norm, pre = normalizers.NFC(), pre_tokenizers.BertPreTokenizer()
    inner: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            inner.update(word[1:])
    fixed = SPECIAL + ["##" + ch for ch in sorted(inner)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=fixed,
                                        initial_alphabet=MARKER_CHARS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok.get_vocab(with_added_tokens=False)


def encoder_config(size: str, vocab_size: int, max_positions: int = 512, dropout: float | None = None):
    """A BertConfig of the preset size (random init happens in the caller, after seeding)."""
    from transformers import BertConfig

    layers, hidden, heads, inter = SIZES[size]
    kw: dict[str, Any] = {}
    if dropout is not None:
        kw = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=max_positions, type_vocab_size=2, **kw,
    )


def _kiwi():
    try:
        from kiwipiepy import Kiwi
    except ImportError:
        raise ConfigError("--scratch-tokenizer morpheme needs kiwipiepy: pip install 'rekit[morpheme]'") from None
    return Kiwi()


def morpheme_pieces(texts: Sequence[str]) -> Counter:
    """Counts of morpheme pieces: word-initial morphemes as is, later ones with a '##' prefix.

    Cuts come from kiwipiepy's analysis but pieces are *surface* substrings of the word (the
    analyser's normalised forms, e.g. 했 -> 하+었, could not be matched in the text).
    """
    kiwi = _kiwi()
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    for text, tokens in zip(texts, kiwi.tokenize(texts)):
        cuts = {t.start for t in tokens} | {t.start + t.len for t in tokens}
        for _word, (start, end) in pre.pre_tokenize_str(text):
            inner = sorted(c for c in cuts if start < c < end)
            bounds = [start, *inner, end]
            for i, (a, b) in enumerate(itertools.pairwise(bounds)):
                counts[("##" if i else "") + text[a:b]] += 1
    return counts


def morpheme_vocab(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> dict[str, int]:
    """Specials, every character (initial and '##' form, so nothing is unknown that was seen),
    then the most frequent morpheme pieces up to `vocab_size`."""
    pieces = morpheme_pieces(texts)
    chars: Counter = Counter()
    for piece, c in pieces.items():
        body = piece[2:] if piece.startswith("##") else piece
        for _i, ch in enumerate(body):
            chars[ch] += c
    vocab: list[str] = list(SPECIAL)
    seen = set(vocab)
    for ch in MARKER_CHARS + [ch for ch, _ in chars.most_common()]:
        for form in (ch, "##" + ch):
            if form not in seen:
                seen.add(form)
                vocab.append(form)
    for piece, c in pieces.most_common():
        if len(vocab) >= vocab_size or c < min_frequency:
            break
        if piece not in seen:
            seen.add(piece)
            vocab.append(piece)
    return {tok: i for i, tok in enumerate(vocab)}
