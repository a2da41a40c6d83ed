"""rekit: sentence-level relation extraction, from a labeled file to a K-fold ensemble.

    import rekit
    result = rekit.train(train="train.csv", output="runs/x", model="scratch", folds=5)
    student = rekit.distill("runs/x", output="runs/x-one")  # the K fold models as one model
    model = rekit.load("runs/x")          # a run, a fold directory, or an ONNX export
    model.predict([...]); model.predict_proba([...]); model.labels

Imports are lazy: `import rekit` loads neither torch nor transformers.
"""

__version__ = "0.1.0"
__all__ = ["Model", "TrainResult", "__version__", "distill", "load", "train"]


def __getattr__(name: str):
    if name in ("train", "distill", "load", "TrainResult", "Model"):
        from rekit import api

        return getattr(api, name)
    raise AttributeError(f"module 'rekit' has no attribute {name!r}")
