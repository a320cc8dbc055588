"""Synthetic data, made only when a command asks for it: a CBIS-DDSM tree in the real layout and schema
(``cbis``), the mammograms and lesions it draws (``images``), DICOM writing (``dicom_write``) and the density
study's dataset (``density``)."""
