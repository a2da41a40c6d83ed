"""`rekit export`: a run's fold models as ONNX graphs that predict without PyTorch."""

from __future__ import annotations

from pathlib import Path

from rekit.errors import RekitError


def export(args) -> int:
    if not Path(args.run_dir).exists():
        raise RekitError(f"{args.run_dir}: no such run directory")
    try:
        import onnx  # noqa: F401 - the exporter needs it; say so before loading any model
    except ImportError:
        raise RekitError("exporting to ONNX needs the onnx package: pip install 'rekit[onnx]'") from None
    from rekit.export.onnx import export_run

    out = export_run(args.run_dir, args.output, quantize=args.quantize, overwrite=args.overwrite,
                     dynamo=args.exporter == "dynamo")
    print(f"ONNX export ({'int8' if args.quantize else 'fp32'}): {out}")
    print(f"next: rekit predict {out} --input TEST --output submission.csv   (or rekit.load({str(out)!r}) in Python)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run's fold models to ONNX (predict without PyTorch)",
                       description="Write each fold model as an ONNX graph (dynamic batch and sequence axes, "
                       "softmax output) with the tokenizer, labels and a model card beside them. `rekit predict DIR` "
                       "and rekit.load(DIR) then run it with onnxruntime, without importing torch.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `rekit train` (or one fold directory)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.add_argument("--output", required=True, help="directory to write the export into")
    p.add_argument("--quantize", action="store_true",
                   help="int8 dynamic quantisation of the weights (onnxruntime.quantization): smaller and faster on "
                   "CPUs, at a small accuracy cost (BENCHMARKS.md)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter: torchscript (default; same outputs, about 8x faster to export) or dynamo")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output directory")
    p.set_defaults(func=export)
