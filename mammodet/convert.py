"""``python -m mammodet.convert data.dicom_root=DIR data.csv_dir=DIR out_dir=DIR``: DICOM -> images + COCO, with the
settings of ``data.convert`` (the ones training converts with)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mammodet.cli import command
from mammodet.data.conversion import ConvertLockError, ConvertSettings, convert_dataset
from mammodet.errors import UserError


@command("convert")
def main(cfg: DictConfig) -> None:
    """Convert, then print the per-split counts and where the report is."""
    for key, expected in (("csv_dir", "the CBIS-DDSM case-description CSVs"), ("dicom_root", "the TCIA DICOM tree")):
        value = cfg.data.get(key)
        if not value or not Path(value).is_dir():
            raise UserError(f"data.{key}={value}: {'not set' if not value else 'no such folder'}; expected {expected}")
    options = OmegaConf.to_container(cfg.data.convert)
    workers = options.pop("workers", 0)
    settings = ConvertSettings(mass_rule=cfg.data.mass_rule, gamma=cfg.data.image_gamma, **options)
    try:
        summary = convert_dataset(
            cfg.data.dicom_root,
            cfg.data.csv_dir,
            cfg.out_dir,
            settings,
            split_options=OmegaConf.to_container(cfg.data.split),
            workers=workers,
        )
    except ConvertLockError as error:
        raise UserError(str(error)) from error
    print(f"converted {summary.converted}, resumed {summary.resumed}, problems reported {len(summary.skipped)}")
    if summary.redone:
        print(f"redone (their CSV rows, files or settings changed): {len(summary.redone)}, listed in the report")
    if summary.duplicate_rows:
        print(f"duplicate CSV rows dropped: {summary.duplicate_rows}")
    for split, count in summary.images_per_split.items():
        print(f"  {split:5s} {count:5d} images  lesions {summary.lesions_per_split[split]}")
    lost = sum(summary.lesions_lost.values())
    print(f"excluded (a lesion cannot be located): {len(summary.excluded)} mammograms, {lost} lesions lost")
    for warning in summary.split_warnings:
        print(f"warning: {warning}")
    print(f"patients in both official sets: {summary.overlap_patients}")
    print(f"COCO files in {cfg.out_dir}/annotations, report in {cfg.out_dir}/conversion_report.json")


if __name__ == "__main__":
    main()
