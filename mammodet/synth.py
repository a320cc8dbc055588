"""``python -m mammodet.synth [format=cbis_ddsm|vindr_mammo|inbreast|mini_mias] out_dir=DIR``: write a synthetic
tree of a dataset in its published format (DICOM/PGM, CSVs, XMLs, ``synth_truth.json``)."""

from __future__ import annotations

import importlib
import importlib.util

from omegaconf import DictConfig

from mammodet import datasets
from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.synthetic.cbis import SynthSpec, generate

DEFAULT_FORMAT = "cbis_ddsm"


def generate_format(name: str, out_dir: str, seed: int) -> None:
    """Write the synthetic tree of dataset ``name`` (``mammodet/synthetic/<name>.py``) with its default size."""
    module = f"mammodet.synthetic.{name}"
    if name not in datasets.names() or importlib.util.find_spec(module) is None:
        known = [DEFAULT_FORMAT] + [n for n in datasets.names() if importlib.util.find_spec(f"mammodet.synthetic.{n}")]
        raise UserError(f"format={name}: no synthetic generator for it; choose one of {', '.join(sorted(set(known)))}")
    importlib.import_module(module).generate(out_dir, seed=seed)


@command("synth")
def main(cfg: DictConfig) -> None:
    """Generate the dataset described by ``conf/synth.yaml``."""
    if cfg.format != DEFAULT_FORMAT:
        generate_format(cfg.format, cfg.out_dir, cfg.seed)
        print(f"synthetic {cfg.format} written to {cfg.out_dir} (synth_truth.json: what each image must convert to)")
        return
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
