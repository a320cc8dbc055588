"""DICOM decoding: VOI/modality LUTs, percentile window, MONOCHROME1, compressed syntaxes and bad files."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from helpers import huge_rle_header
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from mammodet.data.dicom import (
    DicomError,
    DicomImageInfo,
    is_binary_mask,
    read_dicom,
    read_dicom_header,
    read_raw_pixels,
)
from mammodet.synthetic.dicom_write import write_dicom

SECRET = "SECRET^NAME"


def _mammogram(bits: int = 12, shape: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """A black background with a textured "breast" in the left 2/3 of the columns."""
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    pixels = np.zeros(shape, np.uint8 if bits <= 8 else np.uint16)
    pixels[:, : shape[1] * 2 // 3] = rng.integers(top // 8, top - top // 8, (shape[0], shape[1] * 2 // 3))
    return pixels


def _write(path: Path, pixels: np.ndarray, *, extra: dict[str, Any] | None = None, **kwargs: Any) -> Path:
    """``write_dicom`` with a planted patient name that must never leak."""
    return write_dicom(path, pixels, extra={"PatientName": SECRET, **(extra or {})}, **kwargs)


def _ramp(top: int = 4095) -> np.ndarray:
    """Every stored value 0..top once (padded with zeros), as a 2-D uint16 image."""
    values = np.zeros(64 * 64, np.uint16)
    values[: top + 1] = np.arange(top + 1)
    return values.reshape(64, 64)


def _percentile_expected(pixels: np.ndarray, gamma: float = 0.8, q: tuple[float, float] = (0.5, 99.5)):
    values = pixels.astype(np.float64)
    low, high = np.percentile(values[values > values.min()], q)
    return np.clip((values - low) / (high - low), 0, 1) ** gamma


# ---------------------------------------------------------------- MONOCHROME1


@pytest.mark.parametrize("out_dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize(("bits", "bits_stored"), [(8, 8), (16, 16), (16, 12)])
def test_monochrome1_decodes_like_monochrome2(tmp_path, out_dtype, bits, bits_stored):
    pixels = _mammogram(bits=min(bits_stored, 12) if bits == 16 else 8)
    extra = {"BitsStored": bits_stored, "HighBit": bits_stored - 1}
    m2 = _write(tmp_path / "m2.dcm", pixels, extra=extra)
    inverted = (2**bits_stored - 1 - pixels.astype(np.int64)).astype(pixels.dtype)
    m1 = _write(tmp_path / "m1.dcm", inverted, photometric="MONOCHROME1", extra=extra)
    out2, out1 = read_dicom(m2, out_dtype=out_dtype), read_dicom(m1, out_dtype=out_dtype)
    assert out1.dtype == out2.dtype == np.dtype(out_dtype)
    np.testing.assert_array_equal(out1, out2)
    assert out2[0, -1] == 0  # background dark, tissue bright
    assert out2[:, :32].max() > 0


def test_monochrome1_window_is_applied_then_inverted(tmp_path):
    pixels = _ramp()
    window = {"voi_lut_function": "LINEAR_EXACT"}
    m2 = _write(tmp_path / "m2.dcm", pixels, window=(1000.0, 600.0), **window)
    m1 = _write(tmp_path / "m1.dcm", 65535 - pixels, photometric="MONOCHROME1", window=(64535.0, 600.0), **window)
    np.testing.assert_allclose(read_dicom(m1, out_dtype="float32"), read_dicom(m2, out_dtype="float32"), atol=1e-6)


# ---------------------------------------------------------------- VOI and modality LUT


def _linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, scaled to [0, 1]."""
    y = ((x - (c - 0.5)) / (w - 1) + 0.5).astype(np.float64)
    y[x <= c - 0.5 - (w - 1) / 2] = 0
    y[x > c - 0.5 + (w - 1) / 2] = 1
    return y


def _linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2, scaled to [0, 1]."""
    y = ((x - c) / w + 0.5).astype(np.float64)
    y[x <= c - w / 2] = 0
    y[x > c + w / 2] = 1
    return y


def _sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1, scaled to [0, 1]."""
    return 1 / (1 + np.exp(-4 * (x - c) / w))


PROBES = np.array([0, 1535, 1536, 1537, 1800, 2047, 2048, 2300, 2558, 2559, 2560, 4095])


@pytest.mark.parametrize(
    ("function", "formula"), [(None, _linear), ("LINEAR", _linear), ("LINEAR_EXACT", _linear_exact)]
)
def test_linear_windows_match_the_standard(tmp_path, function, formula):
    path = _write(tmp_path / "w.dcm", _ramp(), window=(2048.0, 1024.0), voi_lut_function=function)
    out = read_dicom(path, out_dtype="uint16", gamma=1.0).reshape(-1)
    np.testing.assert_array_equal(out[PROBES], np.rint(formula(PROBES, 2048.0, 1024.0) * 65535))
    if formula is _linear:  # by hand: flat up to c - 0.5 - (w-1)/2 = 1536, full above c - 0.5 + (w-1)/2 = 2559
        assert out[1536] == 0 and out[1537] == 64 and out[2559] == 65535 and out[2558] == 65471
    else:  # flat up to c - w/2 = 1536, full above c + w/2 = 2560, 0.5 at the centre
        assert out[1536] == 0 and out[2048] == 32768 and out[2560] == 65535 and out[2559] == 65471


def test_sigmoid_window_and_gamma(tmp_path):
    path = _write(tmp_path / "s.dcm", _ramp(), window=(2048.0, 1024.0), voi_lut_function="SIGMOID")
    expected = _sigmoid(PROBES, 2048.0, 1024.0)
    out = read_dicom(path, out_dtype="float32", gamma=1.0).reshape(-1)
    np.testing.assert_allclose(out[PROBES], expected, atol=1e-6)
    assert out[2048] == pytest.approx(0.5)
    out8 = read_dicom(path, gamma=0.8).reshape(-1)
    np.testing.assert_array_equal(out8[PROBES], np.rint(expected**0.8 * 255))


def test_first_of_several_windows_is_used(tmp_path):
    path = _write(tmp_path / "w.dcm", _ramp(), extra={"WindowCenter": [2048, 100], "WindowWidth": [1024, 50]})
    out = read_dicom(path, out_dtype="uint16", gamma=1.0).reshape(-1)
    np.testing.assert_array_equal(out[PROBES], np.rint(_linear(PROBES, 2048.0, 1024.0) * 65535))


def test_rescale_slope_intercept_then_window(tmp_path):
    # Window in rescaled units: stored s -> 2 s - 100, window centre 3000 width 2000 (LINEAR_EXACT).
    path = _write(
        tmp_path / "r.dcm", _ramp(), rescale=(2.0, -100.0), window=(3000.0, 2000.0), voi_lut_function="LINEAR_EXACT"
    )
    out = read_dicom(path, out_dtype="uint16", gamma=1.0).reshape(-1)
    np.testing.assert_array_equal(out[PROBES], np.rint(_linear_exact(2.0 * PROBES - 100, 3000.0, 2000.0) * 65535))
    assert out[1050] == 0 and out[1550] == 32768 and out[2050] == 65535  # 2000, 3000, 4000 after rescale
    raw = read_raw_pixels(path)
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw, 2.0 * _ramp() - 100)


def test_modality_lut_sequence(tmp_path):
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", [4095 - v for v in range(4096)])  # an inverting modality LUT
    path = _write(tmp_path / "m.dcm", _ramp(), extra={"ModalityLUTSequence": Sequence([item])})
    raw = read_raw_pixels(path)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.reshape(-1)[:4096], 4095 - np.arange(4096))


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_sequence_12_to_8_bits(tmp_path, vr):
    # 4096 entries of 8 bits starting at stored value 100: pydicom 3.0.2's apply_voi gets this case wrong.
    lut = (np.arange(4096) // 16).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 100, 8]
    item.add_new("LUTData", vr, lut.tolist() if vr == "US" else lut.astype("<u2").tobytes())
    extra = {"VOILUTSequence": Sequence([item]), "WindowCenter": 10, "WindowWidth": 5}  # the LUT wins
    path = _write(tmp_path / "v.dcm", _ramp(), extra=extra)
    out = read_dicom(path, gamma=1.0).reshape(-1)
    stored = np.arange(4096)
    np.testing.assert_array_equal(out[:4096], np.clip(stored - 100, 0, 4095) // 16)  # entry / 255 * 255
    assert out[50] == 0 and out[100 + 3000] == 187


def test_percentile_window_when_no_voi(tmp_path):
    pixels = _mammogram(bits=12)
    path = _write(tmp_path / "p.dcm", pixels)
    expected = _percentile_expected(pixels)
    np.testing.assert_allclose(read_dicom(path, out_dtype="float32"), expected, atol=1e-6)
    np.testing.assert_array_equal(read_dicom(path), np.rint(expected * 255))
    np.testing.assert_array_equal(read_dicom(path, out_dtype="uint16"), np.rint(expected * 65535))
    q = (2.0, 98.0)
    np.testing.assert_array_equal(
        read_dicom(path, percentiles=q, gamma=1.0), np.rint(_percentile_expected(pixels, 1.0, q) * 255)
    )


def test_percentile_window_ignores_a_large_background_and_the_voi_when_asked(tmp_path):
    pixels = np.zeros((50, 50), np.uint16)
    pixels[:5, :5] = np.arange(1000, 1025).reshape(5, 5)  # 1% tissue, 99% black
    path = _write(tmp_path / "b.dcm", pixels, window=(40000.0, 10.0))
    out = read_dicom(path, apply_voi=False, out_dtype="uint16")
    assert out[:5, :5].max() == 65535 and out[:5, :5].min() == 0 and out[10:].max() == 0
    np.testing.assert_array_equal(out, np.rint(_percentile_expected(pixels) * 65535))
    assert read_dicom(path).max() == 0  # the (odd) window of the file, when applied


@pytest.mark.parametrize(
    ("window", "function"), [((2048.0, 0.5), "LINEAR"), ((2048.0, 0.0), "SIGMOID"), ((2048.0, 9.0), "FOO")]
)
def test_unusable_window_falls_back_to_percentiles(tmp_path, window, function):
    pixels = _mammogram(bits=12)
    path = _write(tmp_path / "w.dcm", pixels, window=window, voi_lut_function=function)
    np.testing.assert_array_equal(read_dicom(path), np.rint(_percentile_expected(pixels) * 255))


def test_gamma_and_uint16_range(tmp_path):
    path = _write(tmp_path / "g.dcm", _mammogram(bits=12))
    linear = read_dicom(path, out_dtype="float32", gamma=1.0)
    np.testing.assert_allclose(read_dicom(path, out_dtype="float32"), linear**0.8, atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, out_dtype="float32", gamma=2.0), linear**2, atol=1e-6)
    out16 = read_dicom(path, out_dtype="uint16")
    assert out16.dtype == np.uint16 and out16.min() == 0 and out16.max() == 65535
    assert np.abs(out16 / 257.0 - read_dicom(path)).max() <= 0.51


def test_signed_pixels(tmp_path):
    pixels = _mammogram(bits=12).astype(np.int16) - 1000
    path = _write(tmp_path / "s.dcm", pixels.view(np.uint16), extra={"PixelRepresentation": 1})
    raw = read_raw_pixels(path)
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(raw, pixels)
    np.testing.assert_array_equal(read_dicom(path), np.rint(_percentile_expected(pixels) * 255))


def test_constant_image_is_black(tmp_path):
    out = read_dicom(_write(tmp_path / "c.dcm", np.full((8, 8), 700, np.uint16)))
    assert out.shape == (8, 8) and out.max() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_dtype"):
        read_dicom("x.dcm", out_dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentiles"):
        read_dicom("x.dcm", percentiles=(50, 50))


# ---------------------------------------------------------------- compressed transfer syntaxes


@pytest.mark.parametrize(
    "syntax", [JPEG2000Lossless, RLELossless, JPEGLosslessSV1, JPEGLossless, JPEGLSLossless], ids=lambda s: s.name
)
def test_lossless_syntaxes_decode_like_uncompressed(tmp_path, syntax):
    pixels = _mammogram(bits=12)
    plain = _write(tmp_path / "plain.dcm", pixels)
    packed = _write(tmp_path / "packed.dcm", pixels, transfer_syntax=syntax)
    assert pydicom.dcmread(packed, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert read_dicom_header(packed).transfer_syntax == syntax.name
    np.testing.assert_array_equal(read_raw_pixels(packed), pixels)
    np.testing.assert_array_equal(read_dicom(packed, out_dtype="uint16"), read_dicom(plain, out_dtype="uint16"))


@pytest.mark.parametrize("plugin", ["gdcm", "pylibjpeg", "pillow"])
def test_every_jpeg2000_plugin_decodes_exactly(tmp_path, plugin):
    if plugin not in get_decoder(JPEG2000Lossless).available_plugins:
        pytest.skip(f"{plugin} not installed")
    pixels = _mammogram(bits=12)
    path = _write(tmp_path / "j.dcm", pixels, transfer_syntax=JPEG2000Lossless)
    np.testing.assert_array_equal(pydicom.pixels.pixel_array(path, decoding_plugin=plugin), pixels)


def test_jpeg_baseline_decodes_close(tmp_path):
    pixels = _mammogram(bits=8)
    path = _write(tmp_path / "b.dcm", pixels, transfer_syntax=JPEGBaseline8Bit)
    raw = read_raw_pixels(path)
    assert raw.dtype == np.uint8 and raw.shape == pixels.shape
    assert np.abs(raw.astype(int) - pixels).mean() < 8  # lossy


# ---------------------------------------------------------------- header, raw pixels, masks


def test_header_has_only_pixel_fields_and_uids(tmp_path):
    path = _write(tmp_path / "h.dcm", _mammogram(bits=12), study_uid="1.2.3.4", series_uid="1.2.3.5")
    info = read_dicom_header(path)
    assert info == DicomImageInfo(64, 48, "MONOCHROME2", 16, "Explicit VR Little Endian", "1.2.3.4", "1.2.3.5")
    assert {f.name for f in dataclasses.fields(DicomImageInfo)} == {
        "rows",
        "columns",
        "photometric",
        "bits_stored",
        "transfer_syntax",
        "study_uid",
        "series_uid",
    }
    assert SECRET not in repr(info)


def test_masks_and_crops(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[5:9, 6:12] = 255
    crop = _mammogram(bits=12)
    assert is_binary_mask(read_raw_pixels(_write(tmp_path / "m.dcm", mask)))
    assert not is_binary_mask(read_raw_pixels(_write(tmp_path / "c.dcm", crop)))
    assert is_binary_mask(np.where(mask > 0, 65535, 0).astype(np.uint16))
    assert is_binary_mask(np.zeros((3, 3), np.uint16))
    assert not is_binary_mask(np.full((3, 3), 255, np.uint8))  # no 0
    assert not is_binary_mask(np.array([[0, 1, 2]], np.uint8))
    assert not is_binary_mask(np.zeros((0, 3), np.uint8))


# ---------------------------------------------------------------- bad files


def _valid(tmp_path: Path, **kwargs: object) -> Path:
    return _write(tmp_path / "valid.dcm", _mammogram(bits=12), **kwargs)


def _not_dicom(tmp_path: Path) -> Path:
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    return path


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "image.dcm"
    path.write_bytes(cv2.imencode(".png", _mammogram(bits=8))[1].tobytes())
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.touch()
    return path


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _no_pixels(tmp_path: Path) -> Path:
    path = _valid(tmp_path)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return path


def _empty_pixels(tmp_path: Path) -> Path:
    path = _valid(tmp_path)
    ds = pydicom.dcmread(path)
    ds.PixelData = b""
    ds.save_as(path)
    return path


def _mpeg2(tmp_path: Path) -> Path:
    path = _valid(tmp_path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(path)
    return path


def _unknown_syntax(tmp_path: Path) -> Path:
    path = _valid(tmp_path)
    data = path.read_bytes()
    old, new = b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.1.2.1\0"  # same length: the meta group stays valid
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path


def _multi_frame(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "frames.dcm", _mammogram(bits=12, shape=(128, 48)), extra={"Rows": 64, "NumberOfFrames": 2}
    )


def _two_frames_undeclared(tmp_path: Path) -> Path:
    """Pixel data of two 64 x 48 frames, without NumberOfFrames (pydicom alone would return a 3-D array)."""
    return _write(tmp_path / "frames.dcm", _mammogram(bits=12, shape=(128, 48)), extra={"Rows": 64})


def _named_photometric(tmp_path: Path) -> Path:
    """A PhotometricInterpretation holding the patient's name: the error must not echo it."""
    return _valid(tmp_path, extra={"PhotometricInterpretation": SECRET})


def _named_syntax(tmp_path: Path) -> Path:
    """A Transfer Syntax UID holding the patient's name: the error must not echo it."""
    path = _valid(tmp_path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = SECRET
    ds.save_as(path, enforce_file_format=False)
    return path


def _colour(tmp_path: Path) -> Path:
    extra = {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0, "Columns": 16}
    return _write(tmp_path / "rgb.dcm", _mammogram(bits=8), extra=extra)


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "random bytes": (_not_dicom, "not a DICOM file"),
    "png": (_png, "not a DICOM file"),
    "empty file": (_empty, "empty file"),
    "missing file": (lambda tmp: tmp / "absent.dcm", "cannot read the file"),
    "truncated": (lambda tmp: _cut(_valid(tmp)), "truncated"),
    "truncated jpeg2000": (lambda tmp: _cut(_valid(tmp, transfer_syntax=JPEG2000Lossless)), "truncated"),
    "truncated rle": (lambda tmp: _cut(_valid(tmp, transfer_syntax=RLELossless)), "truncated"),
    "no pixel data": (_no_pixels, "no pixel data"),
    "empty pixel data": (_empty_pixels, "empty pixel data"),
    "zero rows": (lambda tmp: _valid(tmp, extra={"Rows": 0}), "empty image (0 x 48 pixels)"),
    "mpeg2": (_mpeg2, "unsupported transfer syntax MPEG2 Main Profile / Main Level"),
    "unknown syntax": (_unknown_syntax, "unsupported transfer syntax 1.2.840.99999.1.2.1"),
    "multi-frame": (_multi_frame, "multi-frame image (2 frames)"),
    "colour": (_colour, "colour image (3 samples per pixel)"),
    "two frames, no NumberOfFrames": (_two_frames_undeclared, "pixel data holds 2 frames but NumberOfFrames is 1"),
    "name in PhotometricInterpretation": (_named_photometric, "unsupported PhotometricInterpretation; only MONO"),
    "name in Transfer Syntax UID": (_named_syntax, "invalid Transfer Syntax UID in the file meta information"),
}
PIXEL_DATA_CASES = ("truncated", "truncated jpeg2000", "truncated rle", "no pixel data", "empty pixel data")
PIXEL_DATA_CASES += ("two frames, no NumberOfFrames",)


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_one_error_naming_the_file_and_nothing_else(tmp_path, case, caplog, recwarn):
    make, reason = BAD_FILES[case]
    path = make(tmp_path)
    caplog.clear()  # pydicom warns (with the value) when a fixture writes an invalid value; reading must not
    recwarn.clear()
    caplog.set_level(logging.DEBUG)
    readers = [read_dicom, read_raw_pixels]
    if case not in PIXEL_DATA_CASES:
        readers.append(read_dicom_header)  # the header reader does not look at the pixel data
    for reader in readers:
        with pytest.raises(DicomError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and reason in message
        chain = [info.value, info.value.__cause__, info.value.__context__]
        assert all(SECRET not in str(exc) and "SECRET" not in repr(exc) for exc in chain)
    assert "SECRET" not in caplog.text
    assert all("SECRET" not in str(w.message) for w in recwarn)


def test_header_reads_a_file_truncated_in_its_pixel_data(tmp_path):
    path = _cut(_valid(tmp_path))
    assert read_dicom_header(path).rows == 64
    with pytest.raises(DicomError, match="truncated"):
        read_dicom(path)


def test_missing_plugin_is_named(tmp_path):
    path = _valid(tmp_path, transfer_syntax=JPEGLosslessSV1)
    decoder = get_decoder(JPEGLosslessSV1)
    assert decoder.available_plugins == ("gdcm",)  # pylibjpeg-libjpeg (GPL) is not installed
    decoder.remove_plugin("gdcm")
    try:
        with pytest.raises(DicomError) as info:
            read_dicom(path)
    finally:
        decoder.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))
    message = str(info.value)
    assert JPEGLosslessSV1.name in message and "plugin is missing" in message and SECRET not in message
    np.testing.assert_array_equal(read_raw_pixels(path), _mammogram(bits=12))


@pytest.mark.parametrize("reader", [read_dicom, read_raw_pixels])
def test_a_huge_header_fails_fast_before_decoding(tmp_path, reader):
    import time
    import tracemalloc

    from mammodet.data.dicom import DEFAULT_MAX_PIXELS, PixelLimitError

    bomb = huge_rle_header(tmp_path)
    assert bomb.stat().st_size < 10_000 and DEFAULT_MAX_PIXELS == 50_000_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(PixelLimitError, match=r"bomb.dcm: 60000 x 60000 = 3600000000 pixels, more than the limit"):
        reader(bomb)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20_000_000
    with pytest.raises(PixelLimitError, match="more than the limit of 1000"):
        reader(_write(tmp_path / "ok.dcm", _mammogram(shape=(64, 48))), max_pixels=1000)


def _lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new("LUTData", "US", data)
    return item


@pytest.mark.parametrize(
    "extra,reason",
    [
        ({"RescaleSlope": 0, "RescaleIntercept": 0}, r"degenerate modality LUT \(RescaleSlope 0.0\)"),
        ({"RescaleSlope": "NaN", "RescaleIntercept": 0}, r"degenerate modality LUT \(RescaleSlope nan\)"),
        ({"RescaleSlope": 1, "RescaleIntercept": "inf"}, r"degenerate modality LUT \(RescaleIntercept inf\)"),
        ({"VOILUTSequence": Sequence([_lut_item([4096, 0, 0], list(range(4096)))])}, r"degenerate VOI LUT.*0 bits"),
        ({"VOILUTSequence": Sequence([_lut_item([0, 0, 16], [0] * 4096)])}, r"degenerate VOI LUT \(every entry"),
    ],
)
def test_degenerate_luts_raise(tmp_path, extra, reason):
    path = _write(tmp_path / "d.dcm", _ramp(), extra=extra)
    with pytest.raises(DicomError, match=reason):
        read_dicom(path)
