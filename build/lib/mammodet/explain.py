"""``python -m mammodet.explain ckpt_path=FILE input=FILE_OR_FOLDER``: a Grad-CAM heat map PNG per detected lesion."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammodet.config import CONFIG_DIR
from mammodet.serving.explain import explain_file
from mammodet.serving.inference import Detector, InputError
from mammodet.serving.predict import list_inputs
from mammodet.serving.render import png_bytes

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="explain")
def main(cfg: DictConfig) -> None:
    """Write ``<out_dir>/<folders>/<name>.lesion<k>.png``; exit 1 naming each file that could not be read."""
    detector = Detector.from_checkpoint(cfg.ckpt_path, cfg.device, max_pixels=cfg.max_pixels)
    input_path, out = Path(cfg.input), Path(cfg.out_dir)
    root = input_path if input_path.is_dir() else input_path.parent
    failed = []
    for path in list_inputs(input_path):
        relative = path.relative_to(root)
        try:
            pictures = explain_file(detector, path, cfg.score_thresh, cfg.max_lesions)
        except InputError as error:
            log.warning("%s", error)
            failed.append(f"{relative.as_posix()}: {error.reason}")
            continue
        (out / relative.parent).mkdir(parents=True, exist_ok=True)
        for k, picture in enumerate(pictures, start=1):
            (out / relative.parent / f"{relative.name}.lesion{k}.png").write_bytes(png_bytes(picture))
        print(f"{relative.as_posix()}: {len(pictures)} lesions explained")
    if failed:
        raise SystemExit("could not read:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
