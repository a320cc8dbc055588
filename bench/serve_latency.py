"""Latency of ``POST /v1/detect`` on the CPU for one full synthetic mammogram, as a client sees it.

    python bench/serve_latency.py --ckpt logs/demo/runs/<run>/checkpoints/last.ckpt [--threads 2] [--repeats 10]

Starts ``python -m mammodet.serve`` on a free loopback port, limited to ``--threads`` cores (CPU affinity and
``OMP_NUM_THREADS``), renders one synthetic mammogram (with a mass and a calcification cluster) per size in
``--sizes`` as a 12-bit DICOM, sends each once to warm up and then ``--repeats`` times, and prints a markdown
table of the request times (upload, decoding, preprocessing, model, JSON).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from mammodet.synthetic.dicom_write import write_dicom
from mammodet.synthetic.images import breast_region, render_mammogram, sample_lesions


def synthetic_dicom(path: Path, height: int, width: int) -> Path:
    """A synthetic CC mammogram of ``height`` x ``width`` with one mass and one calcification cluster."""
    rng = np.random.default_rng(0)
    mask = breast_region(rng, height, width, "LEFT", "CC")
    lesions = sample_lesions(rng, mask, n_masses=1, n_calcs=1)
    image = render_mammogram(rng, height, width, "LEFT", "CC", lesions, breast_mask=mask)
    return write_dicom(path, image.pixels)


def start_server(ckpt: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """The serve command on ``threads`` cores; returns it and its URL once /health answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cores = sorted(os.sched_getaffinity(0))[:threads]
    process = subprocess.Popen(
        [sys.executable, "-m", "mammodet.serve", f"ckpt_path={ckpt}", f"port={port}", "device=cpu"],
        env={**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.25)
    process.terminate()
    raise RuntimeError(f"the server did not start; its log:\n{log.read_text()[-3000:]}")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by python -m mammodet.train")
    parser.add_argument("--threads", type=int, default=2, help="CPU cores the server may use")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", default="768x480,4096x2560", help="mammogram sizes HxW, comma-separated")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        files = [synthetic_dicom(work / f"{h}x{w}.dcm", h, w) for h, w in sizes]
        process, url = start_server(args.ckpt, args.threads, work / "serve.log")
        try:
            model = httpx.get(f"{url}/v1/model").json()
            rows = []
            for (height, width), path in zip(sizes, files, strict=True):
                data = path.read_bytes()
                times = []
                for _ in range(args.repeats + 1):  # the first is a warm-up
                    started = time.perf_counter()
                    answer = httpx.post(f"{url}/v1/detect", files={"file": ("scan", data)}, timeout=600)
                    times.append((time.perf_counter() - started) * 1000)
                    answer.raise_for_status()
                times = times[1:]
                rows.append(
                    f"| {height} x {width} | {len(data) / 1e6:.1f} MB | {len(answer.json()['detections'])} "
                    f"| {statistics.median(times):.0f} | {min(times):.0f} | {max(times):.0f} |"
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"model {model['version']} ({model['arch']}, max_side {model['preprocessing']['max_side']}), "
          f"{args.threads} CPU threads on {cpu_name()}, {args.repeats} requests after one warm-up, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")  # fmt: skip
    print("| DICOM (H x W) | upload | detections | median ms | min ms | max ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
