"""The community HF-Trainer recipe for KLUE-RE, trained from scratch (row (a) of klue_re_quality.py).

As the community baseline runs it: input "subject[SEP]object" + sentence, the whole dataset
tokenized at once with padding=True (every row padded to the longest, max_length 256),
BertForSequenceClassification ([CLS] head), transformers Trainer with lr 5e-5, batch 16,
warmup 500 steps, weight decay 0.01, 3 epochs, fp32. Here the backbone is a randomly
initialised bert-base shape with a WordPiece tokenizer trained on the training sentences
(no hub). Differences from the community script, on purpose: no evaluation or best-checkpoint
selection on dev during training (that would tune on dev labels) and no checkpoints on disk.

--precision tf32 keeps fp32 weights and optimizer but lets matmuls use TF32 tensor cores
(TrainingArguments(tf32=True)); --precision fp32 is IEEE fp32 throughout (about 3x slower on
an H100/H200).

    python benchmarks/community_recipe.py --train TRAIN --dev DEV --out DIR [--smoke]
Writes DIR/result.json (dev metrics, seconds, parameters) and DIR/dev_probs.npy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rekit.data.labels import LabelMap
from rekit.data.readers import read_records
from rekit.metrics import evaluate
from rekit.modeling.scratch import train_tokenizer


class PaddedDataset(torch.utils.data.Dataset):
    """Pre-tokenized tensors (already padded to the dataset's longest row) + labels."""

    def __init__(self, enc: dict, labels: list[int]):
        self.enc, self.labels = enc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


def StopAfter(minutes: float, t0: float, reserve_s: float):
    """A Trainer callback that ends training once `minutes` minus `reserve_s` (for scoring dev after
    it) have passed since t0, the script's start: the cap is the whole script's wall time, so a
    caller's deadline also covers the tokenizer training, the encoding and the dev predictions."""
    from transformers import TrainerCallback

    class _Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() - t0 > minutes * 60 - reserve_s:
                control.should_training_stop = True

    return _Stop()


def tokenize(tokenizer, records, max_length: int) -> dict:
    firsts = [f"{r.subject.text}[SEP]{r.object.text}" for r in records]
    return tokenizer(firsts, [r.sentence for r in records], return_tensors="pt", padding=True,
                     truncation=True, max_length=max_length, add_special_tokens=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=32000, help="WordPiece vocabulary (bert-base has ~30k)")
    p.add_argument("--precision", choices=("tf32", "fp32"), default="tf32")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time cap of the whole script: training stops 30 s before it (the schedule stays "
                   "the recipe's), then dev is scored; the same GPU budget as the rows it is compared with")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU, seconds")
    args = p.parse_args(argv)
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = read_records(args.train)
    dev, _ = read_records(args.dev)
    label_map = LabelMap.infer([r.label for r in train])
    tokenizer = train_tokenizer([r.sentence for r in train], 2000 if args.smoke else args.vocab_size)
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if args.smoke \
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, num_labels=len(label_map), **shape)
    model = BertForSequenceClassification(config)
    y_train = [label_map.label2id[r.label] for r in train]
    train_enc = tokenize(tokenizer, train, args.max_length)
    dev_enc = tokenize(tokenizer, dev, args.max_length)
    t_prep = time.time() - t0
    targs = TrainingArguments(
        output_dir=str(out / "trainer"), learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, num_train_epochs=args.epochs, warmup_steps=args.warmup_steps,
        weight_decay=0.01, save_strategy="no", eval_strategy="no", logging_steps=100, report_to="none",
        seed=args.seed, tf32=(args.precision == "tf32" and torch.cuda.is_available()) or None,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=PaddedDataset(train_enc, y_train),
                      callbacks=[StopAfter(args.max_minutes, t0, 5 if args.smoke else 30)] if args.max_minutes else None)
    t1 = time.time()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_seconds = time.time() - t1
    y_dev = np.asarray([label_map.label2id.get(r.label, -1) for r in dev])
    pred = trainer.predict(PaddedDataset(dev_enc, [0] * len(dev)))
    logits = torch.as_tensor(pred.predictions).float()
    probs = torch.softmax(logits, dim=-1).numpy()
    known = y_dev >= 0
    metrics = evaluate(y_dev[known], probs[known], label_map)
    np.save(out / "dev_probs.npy", probs.astype(np.float32))
    result = {
        "metrics": {k: metrics[k] for k in ("micro_f1", "auprc", "accuracy", "macro_f1")},
        "labels": list(label_map.labels), "parameters": sum(p.numel() for p in model.parameters()),
        "padded_length": int(train_enc["input_ids"].shape[1]), "vocab": len(tokenizer),
        "steps": trainer.state.global_step, "planned_steps": trainer.state.max_steps,
        "stopped_by_budget": trainer.state.global_step < trainer.state.max_steps, "train_seconds": round(train_seconds, 1),
        "prep_seconds": round(t_prep, 1), "seconds": round(time.time() - t0, 1),
        "precision": args.precision if torch.cuda.is_available() else "fp32 (cpu)",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "settings": vars(args), "transformers": transformers.__version__,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["metrics"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
