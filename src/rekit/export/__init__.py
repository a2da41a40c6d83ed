"""Exported models: `onnx` writes an ONNX export of a run (needs torch); `runtime` predicts with one
on onnxruntime (never imports torch); `tokenizer` runs the saved tokenizer without transformers."""
