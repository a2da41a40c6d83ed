"""Export a run's fold models to ONNX (one graph per fold model), with the tokenizer and labels.

    OUT/
      rekit-onnx.json   manifest: format, model files, fold weights, graph inputs, the ModelSpec
      fold-K.onnx       one fold model: inputs (batch, seq) / (batch,), output probs (batch, C)
      labels.json  rekit.json  tokenizer.json  tokenizer_config.json  README.md

Each graph ends in the softmax, so onnxruntime returns what `Ensemble.member_probas` does.
Batch and sequence axes are dynamic. The TorchScript exporter (`dynamo=False`) is the default:
on rekit's BERT models it gives the same outputs as the dynamo exporter (both within 1e-7 of
PyTorch) in about an eighth of the time; pass dynamo=True to use the other. `quantize=True`
replaces every graph by its int8 dynamic quantisation (onnxruntime.quantization: int8 weights
of MatMul/Gemm, activations quantised per batch at run time).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from rekit.errors import RekitError
from rekit.export.runtime import FORMAT, MANIFEST
from rekit.io import atomic_write_text
from rekit.modeling.model import REModel
from rekit.rundir import LABELS_FILE, SPEC_FILE, model_dirs

OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class _Probs(torch.nn.Module):
    """REModel -> softmax probabilities, with positional inputs in the graph's order."""

    def __init__(self, model: REModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, subj_pos, obj_pos, token_type_ids=None):
        logits, _ = self.model(input_ids, attention_mask, subj_pos, obj_pos, token_type_ids=token_type_ids)
        return torch.softmax(logits.float(), dim=-1)


def _example(model: REModel, pad_id: int) -> dict[str, torch.Tensor]:
    """A small padded batch to trace with (two rows of different lengths, entities inside)."""
    ids = torch.full((2, 12), pad_id, dtype=torch.long)
    ids[:, 0] = 2
    ids[0, 1:12] = 5
    ids[1, 1:8] = 5
    mask = (ids != pad_id).long()
    batch = {"input_ids": ids, "attention_mask": mask, "subj_pos": torch.tensor([1, 2]), "obj_pos": torch.tensor([4, 5])}
    if model.use_token_types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def export_model(model: REModel, pad_id: int, path: Path, dynamo: bool = False) -> list[str]:
    """Write one fold model's graph to `path`; returns its input names."""
    batch = _example(model, pad_id)
    names = list(batch)
    wrapper = _Probs(model).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and indexing notes
        if dynamo:
            b, t = torch.export.Dim("batch"), torch.export.Dim("seq")
            shapes = {n: ({0: b, 1: t} if batch[n].dim() == 2 else {0: b}) for n in names}
            torch.onnx.export(wrapper, tuple(batch.values()), str(path), input_names=names, output_names=["probs"],
                              dynamic_shapes=shapes, dynamo=True, external_data=False, opset_version=18)
        else:
            axes = {n: ({0: "batch", 1: "seq"} if batch[n].dim() == 2 else {0: "batch"}) for n in names}
            torch.onnx.export(wrapper, tuple(batch.values()), str(path), input_names=names, output_names=["probs"],
                              dynamic_axes={**axes, "probs": {0: "batch"}}, dynamo=False, opset_version=OPSET)
    return names


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def export_run(run: str | Path, output: str | Path, quantize: bool = False, overwrite: bool = False,
               dynamo: bool = False, echo=print) -> Path:
    """Export every fold model of `run` (a run or one fold directory) into `output`."""
    dirs = model_dirs(run)
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RekitError(f"{out} exists and is not empty; pass --overwrite to replace it")
    _check_shared_files(dirs)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent if out.parent.exists() else None))
    try:
        names: list[str] = []
        inputs: list[str] = []
        for k, d in enumerate(dirs):
            model, tokenizer, _ = REModel.load(d, device="cpu")
            name = f"fold-{k}.onnx"
            target = tmp / (name + ".fp32" if quantize else name)
            inputs = export_model(model, tokenizer.pad_token_id, target, dynamo)
            if quantize:
                quantize_int8(target, tmp / name)
                target.unlink()
            names.append(name)
            echo(f"exported {d} -> {name}" + (" (int8)" if quantize else ""))
        _write_beside(dirs[0], tmp, names, inputs, quantize, run)
        tmp.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_shared_files(dirs: list[Path]) -> None:
    """One tokenizer and one encoding for all fold models: the export encodes inputs once."""
    first = dirs[0]
    for d in dirs[1:]:
        for name in ("tokenizer.json", SPEC_FILE, LABELS_FILE):
            a, b = first / name, d / name
            if not a.is_file() or not b.is_file() or _json_or_bytes(a) != _json_or_bytes(b):
                raise RekitError(f"{d} has a different {name} from {first}; export runs whose folds share it")


def _json_or_bytes(path: Path):
    data = path.read_bytes()
    try:
        return json.loads(data)
    except ValueError:
        return data


def _write_beside(model_dir: Path, tmp: Path, names: list[str], inputs: list[str], quantize: bool, run) -> None:
    """Tokenizer, labels, spec and manifest next to the graphs, then the model card."""
    for name in (*TOKENIZER_FILES, LABELS_FILE, SPEC_FILE):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tmp / name)
    spec = json.loads((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
    manifest = {"format": FORMAT, "models": names, "weights": [1.0] * len(names), "inputs": inputs,
                "outputs": ["probs"], "quantized": "int8-dynamic" if quantize else False, "opset": OPSET,
                "spec": spec, "source": str(Path(run).resolve())}
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    from rekit.modelcard import export_card

    atomic_write_text(tmp / "README.md", export_card(Path(run), manifest))
