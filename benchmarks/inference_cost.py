"""Inference cost of one model against a K-fold ensemble: samples/s on the same rows, side by side.

Two rates for each side, each the median of --repeats timed passes after a warm-up:
the whole prediction (tokenising, batching, copying and the models, as `rekit predict` runs it)
and the models' forward passes alone (rows encoded once, before the clock starts).

    python benchmarks/inference_cost.py --run RUN --student STUDENT_RUN --input dev.csv --out OUT
    python benchmarks/inference_cost.py --run RUN --input dev.csv --out OUT

Without --student the one-model side is RUN's first fold model. A student of `rekit distill`
has its teacher's architecture, so that model costs what the student costs per row.
Writes OUT/inference_cost.json and OUT/inference_cost.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import klue_re_quality as q  # noqa: E402  (the timing helpers the quality benchmark reports with)


def measure(run: str, student: str | None, input_csv: str, device: str, repeats: int) -> dict:
    """Both rates of the ensemble in `run` and of the one model, on the rows of `input_csv`."""
    from rekit.data.readers import read_records
    from rekit.rundir import model_dirs

    records, _ = read_records(input_csv)
    members = model_dirs(run)
    one = model_dirs(student)[:1] if student else members[:1]
    sides = {"ensemble": members, "one model": one}
    out = {"rows": len(records), "members": len(members), "repeats": repeats, "one_model": str(one[0])}
    for name, dirs in sides.items():
        out[name] = q.inference_rates(dirs, records, device, repeats)
    for key in ("infer_samples_per_s", "forward_samples_per_s"):
        out[f"speedup_{key}"] = round(out["one model"][key] / out["ensemble"][key], 2)
    return out


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. {r['rows']:,} rows; median of {r['repeats']} passes.", "",
             "| | whole prediction (samples/s) | forward passes alone (samples/s) |", "|---|---:|---:|"]
    for name in ("ensemble", "one model"):
        label = f"{r['members']}-fold ensemble" if name == "ensemble" else "one model"
        lines.append(f"| {label} | {r[name]['infer_samples_per_s']:,.0f} | {r[name]['forward_samples_per_s']:,.0f} |")
    lines.append(f"| one model / ensemble | {r['speedup_infer_samples_per_s']}x | "
                 f"{r['speedup_forward_samples_per_s']}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished K-fold run directory (rekit train)")
    p.add_argument("--student", help="a run directory whose first model is the one-model side (rekit distill)")
    p.add_argument("--input", required=True, help="the rows to predict (CSV/JSONL; labels are not read)")
    p.add_argument("--out", required=True, help="folder for inference_cost.json and .md")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per rate; the median is reported")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from rekit.errors import RekitError

    try:
        result = {"machine": q.machine(), **measure(args.run, args.student, args.input, args.device, args.repeats)}
    except RekitError as e:  # a wrong path or a run without finished models: one line, no traceback
        print(f"inference_cost.py: {e}", file=sys.stderr)
        return 2
    (out / "inference_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "inference_cost.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
