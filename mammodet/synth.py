"""``python -m mammodet.synth out_dir=DIR``: write a synthetic CBIS-DDSM (DICOM, masks, CSVs)."""

from __future__ import annotations

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.synthetic.cbis import SynthSpec, generate


@command("synth")
def main(cfg: DictConfig) -> None:
    """Generate the dataset described by ``conf/synth.yaml``."""
    spec = SynthSpec(
        n_patients=cfg.n_patients,
        height=cfg.height,
        width=cfg.width,
        seed=cfg.seed,
        layout=cfg.layout,
        test_fraction=cfg.test_fraction,
        max_lesions=cfg.max_lesions,
        half_size_mask_every=cfg.half_size_mask_every,
        lesion_contrast=cfg.lesion_contrast,
        monochrome1_every=cfg.monochrome1_every,
    )
    out = generate(cfg.out_dir, spec, from_csv_dir=cfg.from_csv_dir, limit=cfg.limit, workers=cfg.workers)
    print(f"synthetic CBIS-DDSM written to {out} (csv/, dicom/, synth_truth.json)")


if __name__ == "__main__":
    main()
