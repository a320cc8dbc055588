"""``python -m mammodet.stats data.csv_dir=DIR``: lesion counts per class, mass rule and split (markdown)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from mammodet.cli import command
from mammodet.data.cbis import CbisDataset, load_cbis_ddsm
from mammodet.data.classes import CLASSES
from mammodet.data.labels import MASS_RULES
from mammodet.data.splits import MODES, SPLITS, assign_splits, class_counts


def split_table(dataset: CbisDataset, mass_rule: str, mode: str, **split_options: object) -> list[list[object]]:
    """Rows ``[split, patients, mammograms, lesions per class...]`` for one rule and split mode."""
    result = assign_splits(dataset, mass_rule, mode=mode, **split_options)
    rows = []
    for split in SPLITS:
        members = [m for m in dataset.mammograms if result.assignment[m.key] == split]
        totals = [sum(class_counts(m, mass_rule)[c] for m in members) for c in range(len(CLASSES))]
        rows.append([split, len({m.patient_id for m in members}), len(members), *totals])
    return rows


def markdown(dataset: CbisDataset, split_options: dict[str, object]) -> str:
    """The full report: one table per (mass rule, split mode)."""
    lines = [
        f"{len(dataset.rows)} abnormalities, {len(dataset.mammograms)} physical mammograms, "
        f"{len({m.patient_id for m in dataset.mammograms})} patients"
    ]
    if dataset.duplicate_rows:
        lines.append(f"{dataset.duplicate_rows} duplicate CSV rows dropped (exact copies of an earlier row)")
    options = {k: v for k, v in split_options.items() if k != "mode"}
    for rule in MASS_RULES:
        for mode in MODES:
            lines += [
                "",
                f"mass_rule={rule} split={mode}",
                "",
                "| split | patients | mammograms | " + " | ".join(CLASSES) + " |",
                "|---|---:|---:|" + "---:|" * len(CLASSES),
            ]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in split_table(dataset, rule, mode, **options)]
    return "\n".join(lines)


@command("stats")
def main(cfg: DictConfig) -> None:
    """Print the tables for ``data.csv_dir``."""
    dataset = load_cbis_ddsm(cfg.data.csv_dir)
    print(markdown(dataset, OmegaConf.to_container(cfg.data.split)))
    if dataset.issues:
        print(f"\n{len(dataset.issues)} problems in the CSVs:")
        for issue in dataset.issues:
            print(f"  {issue}")


if __name__ == "__main__":
    main()
