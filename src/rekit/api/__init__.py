"""The public Python API: `rekit.train`, `rekit.distill`, `rekit.load` (re-exported by `rekit`)."""

from rekit.api.distilling import distill
from rekit.api.loading import Model, load
from rekit.api.training import TrainResult, train

__all__ = ["Model", "TrainResult", "distill", "load", "train"]
