"""The training data feed: the albumentations pipeline (``transforms``) and the ``DetectionDataModule``
(``datamodule``) that converts, caches and serves ``mammodet.data``'s datasets to Lightning."""
