"""Fully offline models: a WordPiece tokenizer trained on the data + a randomly initialised BERT."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# (layers, hidden, heads, intermediate). tiny: CPU demos and tests; small: offline KLUE-RE;
# base: the BERT-base shape (what a hub model of that size would have).
SIZES = {
    "tiny": (2, 128, 2, 512),
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int, extra_special: list[str] = ()):
    """Train a BERT-style WordPiece tokenizer and wrap it as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()  # Korean text mixes composed and decomposed Hangul
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
        initial_alphabet=list("@#*^[]<>/:"), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
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


def encoder_config(size: str, vocab_size: int, max_positions: int = 512, dropout: float | None = None):
    """A BertConfig of the preset size (random init happens in the caller, after seeding)."""
    from transformers import BertConfig

    layers, hidden, heads, inter = SIZES[size]
    kw = {}
    if dropout is not None:
        kw = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=max_positions, type_vocab_size=2, **kw,
    )
