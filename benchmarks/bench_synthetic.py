"""Speed of synthetic data generation: frames per second at full resolution on one core.

    python benchmarks/bench_synthetic.py --out benchmarks/results/bench_synthetic.json

Each repeat builds a fresh sequence (street + static BVH, timed apart) and generates
`--frames` frames (camera render + LiDAR scan), writing each to a temporary SemanticKITTI
folder. Reports the median over repeats of frames/s for generation alone and for
generation + writing, with the machine described. By default the process is pinned to one
CPU (`--cores 1`), so Embree and NumPy run single-threaded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Description of the machine and the library versions that matter for the timing."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "trimesh": version("trimesh"),
        "embreex": version("embreex"),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    # Imported here, after the CPU pinning in main(): thread pools (BLAS, Embree's TBB)
    # started by these imports then inherit the pinned affinity.
    from nclr_core.data.synthetic.sequence import SyntheticConfig, SyntheticSequence
    from nclr_core.data.synthetic.writer import write_frame

    config = SyntheticConfig(width=args.width, height=args.height, beams=args.beams)
    scene_s, gen_fps, total_fps, cpu_fps, points = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            t0 = time.perf_counter()
            sequence = SyntheticSequence(args.seed + r, 0, args.frames, config)
            scene_s.append(time.perf_counter() - t0)
            gen = write = 0.0
            cpu0 = time.process_time()
            for i in range(args.frames):
                t1 = time.perf_counter()
                frame = sequence.frame(i)
                t2 = time.perf_counter()
                write_frame(Path(tmp) / f"r{r}", frame)
                t3 = time.perf_counter()
                gen += t2 - t1
                write += t3 - t2
                points.append(frame.scan.points.shape[0])
            cpu = time.process_time() - cpu0
            gen_fps.append(args.frames / gen)
            total_fps.append(args.frames / (gen + write))
            cpu_fps.append(args.frames / cpu)
    return {
        "benchmark": "synthetic generation",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": {"width": args.width, "height": args.height, "beams": args.beams,
                     "frames_per_repeat": args.frames, "repeats": args.repeats,
                     "seed": args.seed},
        "machine": machine(),
        "frames_per_s_generate_median": statistics.median(gen_fps),
        "frames_per_s_generate_and_write_median": statistics.median(total_fps),
        "frames_per_cpu_s_generate_and_write_median": statistics.median(cpu_fps),
        "scene_build_s_median": statistics.median(scene_s),
        "points_per_frame_mean": statistics.fmean(points),
        "frames_per_s_generate_and_write_per_repeat": total_fps,
        "target_frames_per_s": 1.0,
    }


def markdown(result: dict[str, object]) -> str:
    s = result["settings"]
    return (
        "| resolution | beams | frames/s (generate) | frames/s (generate + write) "
        "| frames per CPU-s | scene build (s) | CPU |\n|---|---|---|---|---|---|---|\n"
        f"| {s['width']}x{s['height']} | {s['beams']} "
        f"| {result['frames_per_s_generate_median']:.2f} "
        f"| {result['frames_per_s_generate_and_write_median']:.2f} "
        f"| {result['frames_per_cpu_s_generate_and_write_median']:.2f} "
        f"| {result['scene_build_s_median']:.2f} | {result['machine']['cpu']} |\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/bench_synthetic.json",
                   help="JSON result path (a .md table is written beside it)")
    p.add_argument("--frames", type=int, default=5, help="frames per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=int, default=1242)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--beams", type=int, choices=(64, 32, 16), default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=1,
                   help="pin the process to this many CPUs (0: no pinning)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        raise SystemExit("--frames and --repeats must be >= 1")
    if args.cores > 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    result = run(args)
    from nclr_core.atomic_write import write_text_atomic

    out = Path(args.out)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    write_text_atomic(out.with_suffix(".md"), table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
