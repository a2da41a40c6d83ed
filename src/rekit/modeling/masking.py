"""Dynamic token masking for `--augment mask`: a forward pre-hook on the word embeddings replaces a
random share of ordinary tokens by [MASK] on every training step and does nothing in eval mode.

It lives with the model (build_model installs it) so that modeling never imports training.
"""

from __future__ import annotations

import torch

# Marker punctuation of the punct schemes and the KLUE entity types: the head reads the markers,
# so masking them would hide where the entities are.
MARKER_TEXT = ("@", "*", "#", "^", "PER", "ORG", "LOC", "DAT", "POH", "NOH")



def protected_ids(tokenizer) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    for text in MARKER_TEXT:
        pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        ids.update(i for i in pieces if i is not None)
    return sorted(ids)


def install_token_masking(model, tokenizer, prob: float):
    """Dynamic random masking of ordinary input tokens while training; returns the hook handle."""
    if prob <= 0 or tokenizer.mask_token_id is None:
        return None
    mask_id = tokenizer.mask_token_id
    keep = {"cpu": torch.as_tensor(protected_ids(tokenizer), dtype=torch.long)}

    def hook(module, args):
        if not module.training:
            return None
        ids = args[0]
        if str(ids.device) not in keep:  # copied once: no host-to-device copy inside a CUDA graph capture
            keep[str(ids.device)] = keep["cpu"].to(ids.device)
        hit = torch.rand(ids.shape, device=ids.device) < prob
        hit &= ~torch.isin(ids, keep[str(ids.device)])
        return (torch.where(hit, torch.full_like(ids, mask_id), ids), *args[1:])

    return model.encoder.get_input_embeddings().register_forward_pre_hook(hook)
