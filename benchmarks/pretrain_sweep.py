"""MLM pretraining settings compared at one time cap: held-out perplexity per setting.

Each setting is the recipe file's pretraining (configs/offline-klue.yaml, as klue_re_quality.py
runs it) with some options changed, run by `rekit pretrain` alone on the device, one after
another, on the same corpus and held-out sentences (the same seed). Perplexity on held-out
pretraining sentences needs no labels, so it is a fair measure to choose pretraining by.

    python benchmarks/pretrain_sweep.py --out $OUT --minutes 2 --train out/klue-re/train.csv \\
        --extra out/klue-re/dev.csv --settings "batch_size=128,lr=1e-4" "batch_size=256,lr=1.5e-4"
    python benchmarks/pretrain_sweep.py --out /tmp/ps --smoke        # CPU, seconds

Writes OUT/pretrain_sweep.json and OUT/pretrain_sweep.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import klue_re_quality as q  # noqa: E402  (the recipe and its pretraining command)


def run_setting(r: dict, setting: dict, train: str, extra: list[str], out: Path, minutes: float) -> dict:
    """One `rekit pretrain` with the recipe's pretraining and `setting` changed; its pretrain.json."""
    cmd = q.pretrain_cmd({**r, "pretrain": {**r["pretrain"], **setting}}, train, extra, out, minutes, r["tokenizer"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    t = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"setting": setting, "error": done.stderr.strip().splitlines()[-1:] or ["?"], "returncode": done.returncode}
    info = json.loads((out / "pretrain.json").read_text())
    batch = int(info["settings"]["batch_size"])
    return {"setting": setting, "steps": info["steps"], "epochs": info["epochs_run"], "sentences": info["steps"] * batch,
            "perplexity": info["final"]["valid_perplexity"], "seconds": round(time.time() - t, 1),
            "cmd": " ".join(cmd[2:])}


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}. Cap: {result['minutes']} min per setting, run one after another.", "",
             "| setting | MLM steps | epochs | sentences (steps x batch) | held-out perplexity |", "|---|---:|---:|---:|---:|"]
    for x in result["rows"]:
        what = ", ".join(f"{k} {v}" for k, v in x["setting"].items())
        if "error" in x:
            lines.append(f"| {what} | failed: {x['error'][0]} | | | |")
        else:
            lines.append(f"| {what} | {x['steps']:,} | {x['epochs']} | {x['sentences']:,} | {x['perplexity']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", default=str(q.SHARED / "train.csv"))
    p.add_argument("--extra", nargs="*", default=[str(q.SHARED / "dev.csv")], help="unlabeled extra text")
    p.add_argument("--minutes", type=float, default=2.0, help="time cap of each setting (rekit pretrain --max-minutes)")
    p.add_argument("--settings", nargs="+", type=q.parse_pretrain_set, metavar="KEY=VALUE,...",
                   default=[{"batch_size": "128", "lr": "1e-4"}, {"batch_size": "256", "lr": "1.5e-4"}])
    p.add_argument("--smoke", action="store_true", help="tiny encoder on synthetic rows: seconds on a CPU")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = json.loads(json.dumps(q.SMOKE if args.smoke else q.RECIPE))
    train, extra = (q.smoke_data(out)[0], []) if args.smoke else (args.train, args.extra)
    rows = []
    for i, setting in enumerate(args.settings):
        rows.append(run_setting(r, setting, train, extra, out / f"enc-{i}", args.minutes))
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": q.machine(), "minutes": args.minutes, "recipe_pretrain": r["pretrain"], "rows": rows}
    (out / "pretrain_sweep.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "pretrain_sweep.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0 if all("error" not in x for x in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
