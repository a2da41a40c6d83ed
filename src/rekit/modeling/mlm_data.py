"""Masked-language-model inputs: raw texts -> token ids with word ids, and dynamic masking.

Masking happens per batch (a fresh mask every epoch): on a corpus of a few ten thousand
sentences, pretraining runs for dozens of epochs, and a static mask would be memorised.

Masking kinds, all choosing about `mask_prob` of the tokens:
  token  independent tokens (BERT's original scheme);
  word   whole words: every piece of a chosen whitespace/punctuation word (for Korean, an
         eojeol such as "비틀즈가"), so a word cannot be guessed from its own other pieces;
  span   SpanBERT-style runs of whole words, lengths ~ geometric(p=0.2) capped at 10 words.
Chosen tokens become [MASK] 80 % of the time, a random token 10 %, and stay unchanged 10 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

MASKINGS = ("token", "word", "span")
IGNORE = -100  # label of positions the loss skips


def unique_texts(texts: Iterable[str]) -> list[str]:
    """Non-empty texts, first occurrence kept: KLUE-RE repeats a sentence once per entity pair."""
    seen: set[str] = set()
    out = []
    for t in texts:
        t = t.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


@dataclass
class MLMCorpus:
    """Column-oriented token ids; word_ids[i][j] = index of the word token j belongs to, -1 for specials."""

    input_ids: list[list[int]] = field(default_factory=list)
    word_ids: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def subset(self, idx: Sequence[int]) -> MLMCorpus:
        return MLMCorpus([self.input_ids[i] for i in idx], [self.word_ids[i] for i in idx])

    def n_tokens(self) -> int:
        return sum(self.lengths())


def encode_corpus(tokenizer, texts: Sequence[str], max_length: int, chunk: int = 2048) -> MLMCorpus:
    """Tokenize (truncating at max_length tokens) and keep the word index of every token."""
    corpus = MLMCorpus()
    for i in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[i : i + chunk]), truncation=True, max_length=max_length)
        for j, ids in enumerate(enc["input_ids"]):
            words = enc.word_ids(j)
            corpus.input_ids.append(list(ids))
            corpus.word_ids.append([-1 if w is None else w for w in words])
    return corpus


class PackedRows:
    """A corpus's token and word ids in two flat arrays with row offsets, so a batch is padded by
    one vectorised gather instead of a Python loop over its rows (the host prepares every
    pretraining step; on a GPU that work, not the step, can set the pace)."""

    def __init__(self, corpus: MLMCorpus):
        self.lengths = np.asarray(corpus.lengths(), dtype=np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.ids = np.fromiter((t for row in corpus.input_ids for t in row), dtype=np.int64, count=int(self.lengths.sum()))
        self.words = np.fromiter((w for row in corpus.word_ids for w in row), dtype=np.int64, count=len(self.ids))

    def batch(self, idx: Sequence[int], multiple_of: int, pad_id: int):
        """(input_ids, word_ids, attention_mask), each (B, T) long: T is the longest row rounded up
        to `multiple_of`; padding is `pad_id`, word -1 and attention 0."""
        rows = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[rows]
        width = -(-int(lengths.max()) // multiple_of) * multiple_of
        pos = np.arange(width)
        real = pos[None, :] < lengths[:, None]
        # Padding positions read the row's last token (any in-range index), then are overwritten.
        src = self.offsets[rows][:, None] + np.minimum(pos[None, :], lengths[:, None] - 1)
        ids = np.where(real, self.ids[src], pad_id)
        words = np.where(real, self.words[src], -1)
        return torch.from_numpy(ids), torch.from_numpy(words), torch.from_numpy(real.astype(np.int64))


class MLMCollator:
    """Pads a batch and masks it: -> input_ids, attention_mask, labels (B, T), and the flat
    positions of the predicted tokens with their labels: target_index, target_labels (M,)."""

    def __init__(self, corpus: MLMCorpus, tokenizer, mask_prob: float = 0.15, masking: str = "word",
                 span_p: float = 0.2, max_span: int = 10, multiple_of: int = 1, target_slack: float | None = None):
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.corpus, self.mask_prob, self.masking = corpus, mask_prob, masking
        self.span_p, self.max_span, self.multiple_of = span_p, max_span, multiple_of
        self.target_slack = target_slack  # None: target_index holds exactly the masked positions
        self.pad_id, self.mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
        if self.mask_id is None:
            raise ValueError("the tokenizer has no mask token; MLM pretraining needs one")
        # Random replacements come from ordinary tokens only (never [CLS], [PAD], markers...).
        special = set(tokenizer.all_special_ids)
        self.random_pool = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)
        self.rows = PackedRows(corpus)

    def __call__(self, idx: Sequence[int], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids, words, attention = self.rows.batch(idx, self.multiple_of, self.pad_id)
        chosen = self.choose(words, generator)
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        masked = ids.clone()
        r = torch.rand(ids.shape, generator=generator)
        masked[chosen & (r < 0.8)] = self.mask_id
        swap = chosen & (r >= 0.8) & (r < 0.9)
        pick = torch.randint(len(self.random_pool), (int(swap.sum()),), generator=generator)
        masked[swap] = self.random_pool[pick]
        # Flat positions of the targets, found here on the host: on a GPU, selecting them with a
        # boolean mask would make every step wait for the device (an unknown output size).
        target_index = (labels.view(-1) != IGNORE).nonzero().squeeze(1)
        target_labels = labels.view(-1)[target_index]
        if self.target_slack is not None:
            target_index, target_labels = self.pad_targets(target_index, target_labels, labels.numel())
        return {"input_ids": masked, "attention_mask": attention, "labels": labels,
                "target_index": target_index, "target_labels": target_labels}

    def pad_targets(self, index: torch.Tensor, labels: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets padded (position 0, label IGNORE) to a size that depends on the batch's shape
        only: target_slack x mask_prob of its cells, in multiples of 64. A batch with more targets
        than that keeps its exact size (a shape of its own)."""
        size = -(-int(cells * self.mask_prob * (self.target_slack or 1.0)) // 64) * 64
        extra = size - len(index)
        if extra < 0:
            return index, labels
        return (torch.cat([index, index.new_zeros(extra)]),
                torch.cat([labels, labels.new_full((extra,), IGNORE)]))

    def choose(self, words: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T) bool: the tokens to predict. `words`: (B, T) word index, -1 = special/pad."""
        real = words >= 0
        if self.masking == "token":
            return real & (torch.rand(words.shape, generator=generator) < self.mask_prob)
        n_words = int(words.max().item()) + 1 if real.any() else 1
        if self.masking == "word":
            pick = torch.rand((words.size(0), n_words), generator=generator) < self.mask_prob
        else:
            pick = self._spans(words.size(0), n_words, generator)
        return real & torch.gather(pick, 1, words.clamp(min=0))

    def _spans(self, rows: int, n_words: int, generator) -> torch.Tensor:
        """(rows, n_words) bool word mask made of geometric-length spans covering ~mask_prob."""
        p = self.span_p
        # Lengths ~ Geometric(p) truncated to max_span; starts at a rate that covers mask_prob.
        k = torch.arange(1, self.max_span + 1, dtype=torch.float)
        w = p * (1 - p) ** (k - 1)
        mean_len = float((k * w).sum() / w.sum())
        starts = torch.rand((rows, n_words), generator=generator) < self.mask_prob / mean_len
        lengths = torch.multinomial(w, rows * n_words, replacement=True, generator=generator).view(rows, n_words) + 1
        pick = torch.zeros((rows, n_words), dtype=torch.bool)
        for j in range(self.max_span):
            hit = starts & (lengths > j)
            pick[:, j:] |= hit[:, : n_words - j]
        return pick
