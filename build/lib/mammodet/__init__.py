"""mammodet: breast lesion detection on CBIS-DDSM mammograms with PyTorch Lightning."""

__version__ = "0.1.0"
