"""Benchmark CAM inference speed: AME-CAM versus LayerCAM and Grad-CAM on the same network.

AME-CAM's maps come from one forward pass of the multi-exit network plus the small attention
network; LayerCAM and Grad-CAM need a forward *and* a backward pass. All methods run in the same
process on the same slices, interleaved, several repeats; the median images/s is reported.

Example::

    python data_scripts/bench_cams.py --image-size 128 --n-images 64 --repeats 5
    python data_scripts/bench_cams.py --run-dir runs/demo_flair --modality flair

With ``--run-dir`` the trained networks and the run's test slices are used; otherwise a randomly
initialised ResNet-18 multi-exit network and attention network on random slices (speed does not
depend on the weights). Prints a table; ``--out`` also writes it as CSV (atomically).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from amecam_lib.aggregation import load_attention  # noqa: E402
from amecam_lib.atomic import write_text  # noqa: E402
from amecam_lib.cams import CamMethods  # noqa: E402
from amecam_lib.config import MODALITIES  # noqa: E402
from amecam_lib.device import pick_device  # noqa: E402
from amecam_lib.models.attention import AttentionNet  # noqa: E402
from amecam_lib.models.multi_exit import MultiExitResNet  # noqa: E402
from amecam_lib.phases import load_multi_exit  # noqa: E402
from amecam_lib.slices import load_slices  # noqa: E402

BENCH_METHODS = ("ame_cam", "layer_cam", "grad_cam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Images/s of AME-CAM vs LayerCAM and Grad-CAM (same network).")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder with trained networks and sliced data (default: random networks)")
    parser.add_argument("--modality", choices=MODALITIES, default="flair")
    parser.add_argument("--image-size", type=int, default=128, help="slice side in px without --run-dir")
    parser.add_argument("--n-images", type=int, default=64, help="slices per repeat")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", default=list(BENCH_METHODS))
    parser.add_argument("--hidden", type=int, default=32,
                        help="hidden width of the random attention network without --run-dir "
                             "(32: the authors' architecture; the demo preset trains 16)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV here")
    return parser


def setup(args) -> tuple[CamMethods, torch.Tensor]:
    """The CAM methods and the benchmark slices ``(n, 1, S, S)``."""
    device = pick_device(args.device)
    if args.run_dir is not None:
        model = load_multi_exit(args.run_dir, args.modality, "best", device=device)
        attention = load_attention(args.run_dir, args.modality, device=device)
        images = load_slices(args.run_dir, args.modality, "test").images
        images = torch.from_numpy(np.resize(images, (args.n_images, *images.shape[1:])))
    else:
        torch.manual_seed(0)
        model = MultiExitResNet().to(device).eval()
        attention = AttentionNet(4, hidden=args.hidden).to(device).eval()
        images = torch.rand(args.n_images, 1, args.image_size, args.image_size)
    return CamMethods(model, attention), images


def images_per_second(cams: CamMethods, method: str, images: torch.Tensor, batch_size: int) -> float:
    """Slices per second of one method over ``images`` (maps only, no mask), synchronised on CUDA."""
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        cams.compute(images[start:start + batch_size], [method])
    if cams.device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started)


@torch.no_grad()
def component_seconds(cams: CamMethods, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Seconds per image of AME-CAM's two parts: the multi-exit forward (exit maps, upsampled and
    normalised) and the attention network's forward on the masked slices."""
    exit_seconds = attention_seconds = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(cams.device)
        started = time.perf_counter()
        exit_maps = cams.exit_maps(batch)
        exit_seconds += time.perf_counter() - started
        started = time.perf_counter()
        cams.attention(batch * exit_maps)
        attention_seconds += time.perf_counter() - started
    return {"resnet_forward": exit_seconds / len(images), "attention_forward": attention_seconds / len(images)}


def run(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    cams, images = setup(args)
    for method in args.methods:  # warm-up
        cams.compute(images[:args.batch_size], [method])
    speeds: dict[str, list[float]] = {method: [] for method in args.methods}
    for repeat in range(args.repeats):
        order = args.methods if repeat % 2 == 0 else list(reversed(args.methods))  # interleave fairly
        for method in order:
            speeds[method].append(images_per_second(cams, method, images, args.batch_size))
    parts = [component_seconds(cams, images, args.batch_size) for _ in range(args.repeats)]
    for name in ("resnet_forward", "attention_forward"):
        speeds[name] = [1.0 / part[name] for part in parts]
    reference = statistics.median(speeds["ame_cam"]) if "ame_cam" in speeds else None
    rows = []
    for method in speeds:
        median = statistics.median(speeds[method])
        rows.append({"method": method, "images_per_s": median, "min": min(speeds[method]),
                     "max": max(speeds[method]),
                     "ame_cam_speedup": (reference / median) if reference else float("nan")})
    return rows


def format_table(rows: list[dict], args) -> str:
    size = "run slices" if args.run_dir else f"{args.image_size} px"
    lines = [f"CAM inference, {args.n_images} slices ({size}), batch {args.batch_size}, "
             f"{args.repeats} repeats, device {pick_device(args.device)}, {torch.get_num_threads()} threads; "
             "resnet_forward + attention_forward = the two parts of ame_cam",
             f"{'method':<12} {'img/s (median)':>15} {'min':>8} {'max':>8} {'AME-CAM speed-up':>17}"]
    lines += [f"{r['method']:<12} {r['images_per_s']:>15.2f} {r['min']:>8.2f} {r['max']:>8.2f} "
              f"{r['ame_cam_speedup']:>16.2f}x" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [m for m in args.methods if m not in BENCH_METHODS + ("layer_cam_last", "avg_me", "score_cam")]
    if unknown:
        print(f"error: unknown method(s) {unknown}", file=sys.stderr)
        return 2
    rows = run(args)
    print(format_table(rows, args))
    if args.out is not None:
        buffer = io.StringIO()
        buffer.write("method,images_per_s,min,max,ame_cam_speedup\n")
        for r in rows:
            buffer.write(f"{r['method']},{r['images_per_s']:.4f},{r['min']:.4f},{r['max']:.4f},"
                         f"{r['ame_cam_speedup']:.4f}\n")
        write_text(args.out, buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
