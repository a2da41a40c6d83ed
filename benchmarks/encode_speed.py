"""Encoding speed: rekit's batch encoding against the transformers tokenizer call it replaced.

Every prediction (predict, evaluate, serve, the API, the quality benchmark) and every training run
encodes its rows with `REEncoder.encode`. Both paths run the same Rust tokenizer; the baseline
goes through `tokenizer(firsts, texts, return_offsets_mapping=True)`, which also turns every
row's encoding into Python lists and dicts, and rekit reads the `tokenizers.Encoding`s directly.
The features of the two must be identical, and that is checked here on the same rows.

    python benchmarks/encode_speed.py --model RUN/fold-0 --input dev.csv [--max-length 256] [--repeats 5] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rekit.encoding.tokenize import REEncoder  # noqa: E402


class CallEncoder(REEncoder):
    """The baseline: the batch through the transformers tokenizer call, as rekit did before."""

    def _encodings(self, firsts, texts):
        args = (list(firsts), texts) if firsts is not None else (texts,)
        return self.tokenizer(*args, return_offsets_mapping=True, truncation=False).encodings


def best_seconds(encoder: REEncoder, records, repeats: int):
    best, feats = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        feats = encoder.encode(records)
        best = min(best, time.perf_counter() - t)
    return best, feats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="a fold model directory (its tokenizer and spec)")
    p.add_argument("--input", required=True, help="rows to encode (any format rekit reads)")
    p.add_argument("--max-length", type=int, help="encode at this length instead of the model's own")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per path; the best is kept (default: 5)")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    from rekit.data.readers import read_records

    records, _ = read_records(args.input)
    spec = json.loads((args.model / "rekit.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(args.model))
    length = args.max_length or spec["max_length"]
    make = lambda cls: cls(tok, spec["marker"], length, spec["first_segment"])  # noqa: E731
    base_s, base = best_seconds(make(CallEncoder), records, args.repeats)
    ours_s, ours = best_seconds(make(REEncoder), records, args.repeats)
    same = (ours.input_ids, ours.token_type_ids, ours.subj_pos, ours.obj_pos) == \
        (base.input_ids, base.token_type_ids, base.subj_pos, base.obj_pos)
    result = {"rows": len(records), "max_length": length, "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}",
              "transformers_call_rows_per_s": round(len(records) / base_s), "rekit_rows_per_s": round(len(records) / ours_s),
              "speedup": round(base_s / ours_s, 2), "identical_features": same}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
