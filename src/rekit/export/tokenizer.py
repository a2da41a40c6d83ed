"""A run's saved fast tokenizer, driven through the `tokenizers` library alone.

transformers imports torch when it is installed, so the torch-free ONNX runtime cannot use
`AutoTokenizer`. This adapter reads the same `tokenizer.json` and answers the calls
`rekit.encoding.tokenize.REEncoder` makes the way a transformers fast tokenizer does: single
texts or pairs, with offsets and hard truncation. A batch goes to the backend
`tokenizers.Tokenizer` directly. The export parity test checks that the features are the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from rekit.errors import RekitError


class _Single(dict):
    """One encoding, as `tokenizer(text)` returns it."""

    def __init__(self, enc):
        super().__init__(input_ids=enc.ids, token_type_ids=enc.type_ids, offset_mapping=enc.offsets)
        self._seq = enc.sequence_ids

    def sequence_ids(self, _j: int | None = None):
        return self._seq


class SavedTokenizer:
    is_fast = True

    def __init__(self, directory: str | Path):
        d = Path(directory)
        try:
            self.backend_tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
            config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions (and OSError, ValueError)
            raise RekitError(f"cannot load the tokenizer in {d}: {str(e).splitlines()[0] if str(e) else e}") from None
        self.backend_tokenizer.no_truncation()
        self.backend_tokenizer.no_padding()
        # what REEncoder's batch path reads from a transformers tokenizer (it encodes through backend_tokenizer)
        self.model_input_names = config.get("model_input_names") or ["input_ids", "token_type_ids", "attention_mask"]
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self.sep_token = _token(config.get("sep_token")) or "[SEP]"
        pad = _token(config.get("pad_token")) or "[PAD]"
        self.pad_token_id = self.backend_tokenizer.token_to_id(pad) or 0

    def __call__(self, text, pair=None, return_offsets_mapping: bool = True, truncation=False,
                 max_length: int | None = None):
        if truncation and max_length:
            strategy = "only_second" if truncation == "only_second" else "longest_first"
            self.backend_tokenizer.enable_truncation(max_length, strategy=strategy)
        try:
            backend = self.backend_tokenizer
            return _Single(backend.encode(text, pair) if pair is not None else backend.encode(text))
        finally:
            self.backend_tokenizer.no_truncation()


def _token(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value
