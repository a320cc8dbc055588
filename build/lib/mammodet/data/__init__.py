"""Reading CBIS-DDSM, decoding DICOM, labels, splits, COCO export and datasets."""
