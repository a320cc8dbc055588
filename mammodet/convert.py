"""``python -m mammodet.convert data.dicom_root=DIR data.csv_dir=DIR out_dir=DIR``: DICOM -> images + COCO, with the
settings of ``data.convert`` (the ones training converts with). Another dataset:
``python -m mammodet.convert dataset=vindr_mammo|inbreast|mini_mias data.root=DIR out_dir=DIR``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mammodet import datasets
from mammodet.cli import command
from mammodet.data.conversion import ConvertLockError, ConvertSettings, convert_dataset
from mammodet.data.record_conversion import convert_records, merge_shards, select_shard, shard_dir
from mammodet.errors import UserError

CBIS_DDSM = "cbis_ddsm"


def convert_registered(cfg: DictConfig, settings: ConvertSettings, workers: int) -> None:
    """Convert a dataset of the registry (``dataset=<name>``, files under ``data.root``), one shard of it
    (``data.convert.shard=K/N``) or join its shards (``merge=true``), and print its counts."""
    if not cfg.data.get("root"):
        raise UserError(f"data.root: not set; dataset={cfg.dataset.name} converts the folder of its files")
    options = OmegaConf.to_container(cfg.dataset, resolve=True)
    read = datasets.read(cfg.dataset.name, cfg.data.root, options)
    shard, spacing = cfg.data.convert.get("shard"), cfg.data.get("pixel_spacing_mm")
    if spacing is not None and not float(spacing) > 0:
        raise UserError(f"data.pixel_spacing_mm={spacing}: must be a positive spacing in mm (e.g. 0.1), or null")
    common = {"workers": workers, "pixel_spacing_mm": float(spacing) if spacing else None}
    if cfg.get("merge") and shard:
        raise UserError("merge=true joins the shards: leave data.convert.shard unset")
    out = shard_dir(cfg.out_dir, shard) if shard else cfg.out_dir
    if cfg.get("merge"):
        report = merge_shards(read, cfg.out_dir, options["classes"], settings, **common)
    elif shard:
        report = convert_records(select_shard(read, shard), out, options["classes"], settings, **common)
    else:
        report = convert_records(read, cfg.out_dir, options["classes"], settings, **common)
    print(f"converted {report['converted']}, resumed {report['resumed']}, problems reported {len(report['skipped'])}")
    for split, count in report["images_per_split"].items():
        ignored = report["ignore_regions_per_split"][split]
        print(f"  {split:5s} {count:5d} images  lesions {report['lesions_per_split'][split]}  ignore regions {ignored}")
    print(f"excluded (a lesion cannot be located): {len(report['excluded'])} images")
    print(f"COCO files in {out}/annotations, report in {out}/conversion_report.json")
    if shard:
        print(f"shard {shard} done; join the shards with merge=true")


@command("convert")
def main(cfg: DictConfig) -> None:
    """Convert, then print the per-split counts and where the report is."""
    options = OmegaConf.to_container(cfg.data.convert)
    workers = options.pop("workers", 0)
    shard = options.pop("shard", None)  # read from cfg by convert_registered
    if cfg.dataset.name == CBIS_DDSM and (shard is not None or cfg.merge or cfg.data.pixel_spacing_mm is not None):
        raise UserError(
            "data.convert.shard, merge=true and data.pixel_spacing_mm are for dataset=vindr_mammo|inbreast|mini_mias"
        )
    settings = ConvertSettings(mass_rule=cfg.data.mass_rule, gamma=cfg.data.image_gamma, **options)
    if cfg.dataset.name != CBIS_DDSM:
        try:
            convert_registered(cfg, settings, workers)
        except ConvertLockError as error:
            raise UserError(str(error)) from error
        return
    for key, expected in (("csv_dir", "the CBIS-DDSM case-description CSVs"), ("dicom_root", "the TCIA DICOM tree")):
        value = cfg.data.get(key)
        if not value or not Path(value).is_dir():
            raise UserError(f"data.{key}={value}: {'not set' if not value else 'no such folder'}; expected {expected}")
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
