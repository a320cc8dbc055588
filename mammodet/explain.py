"""``python -m mammodet.explain ckpt_path=FILE input=FILE_OR_FOLDER``: a Grad-CAM heat map PNG per detected lesion.

An image where no lesion reaches ``score_thresh`` gets no file and a line saying so, with the best score and
the threshold that would show it; when that is every image, a last line says nothing was written. The exit
status stays 0 then (no lesion above the threshold is a result: a normal mammogram has none); it is 1 only when
a file could not be read.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from mammodet.cli import command
from mammodet.errors import UserError
from mammodet.serving.explain import explain_file
from mammodet.serving.inference import Detector, InputError
from mammodet.serving.predict import list_inputs
from mammodet.serving.render import png_bytes

log = logging.getLogger(__name__)


def below(best: float | None, cfg: DictConfig) -> str:
    """Why nothing was explained and what to lower: the best score and a ``score_thresh`` that would show it."""
    if best is None:
        return "; the model detected nothing at all (it keeps detections from its own minimum score up)"
    return (
        f"; none scored at least score_thresh={cfg.score_thresh} (best {best:.3f}); "
        f"lower it to see the best, e.g. score_thresh={math.floor(best * 1000) / 1000}"
    )


@command("explain")
def main(cfg: DictConfig) -> None:
    """Write ``<out_dir>/<folders>/<name>.lesion<k>.png``; exit 1 naming each file that could not be read."""
    input_path, out = Path(cfg.input), Path(cfg.out_dir)
    try:
        files = list_inputs(input_path)  # before the model loads: a wrong path or an empty folder is one line
    except FileNotFoundError as error:
        raise UserError(f"input={error}") from error
    detector = Detector.from_checkpoint(cfg.ckpt_path, cfg.device, max_pixels=cfg.max_pixels)
    root = input_path if input_path.is_dir() else input_path.parent
    failed, images, written, best_overall = [], 0, 0, None
    for path in files:
        relative = path.relative_to(root)
        try:
            pictures, best = explain_file(detector, path, cfg.score_thresh, cfg.max_lesions)
        except InputError as error:
            log.warning("%s", error)
            failed.append(f"{relative.as_posix()}: {error.reason}")
            continue
        (out / relative.parent).mkdir(parents=True, exist_ok=True)
        for k, picture in enumerate(pictures, start=1):
            (out / relative.parent / f"{relative.name}.lesion{k}.png").write_bytes(png_bytes(picture))
        images, written = images + 1, written + len(pictures)
        if best is not None:
            best_overall = best if best_overall is None else max(best, best_overall)
        print(f"{relative.as_posix()}: {len(pictures)} lesions explained{'' if pictures else below(best, cfg)}")
    if images and not written:
        print(f"nothing written to {out}{below(best_overall, cfg)}")
    if failed:
        raise SystemExit("could not read:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
