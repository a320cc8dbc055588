"""The breast-density study (docs/density.md): labels and splits (``labels``), images and the datamodule
(``data``), the classifier (``model``) and a run's outputs (``outputs``: metrics of the best epoch, plots,
predictions, Grad-CAM maps)."""

from mammodet.density.model import DensityClassifier

__all__ = ["DensityClassifier"]
