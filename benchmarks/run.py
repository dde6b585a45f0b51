"""Run the benchmarks: speed and memory of every stage, and the comparisons with OpenCV.

    python benchmarks/run.py [--quick] --out DIR [--update-doc] [--sections epnp,data]

Writes DIR/benchmarks.json (every figure, the machine, the command) and DIR/benchmarks.md
(the tables); `--update-doc` also renders BENCHMARKS.md at the repository root. `--quick`
shrinks repeats and sizes so that the run fits CI (under 3 minutes on 2 cores): one repeat,
no warm-up for the heavy stages, the paper configuration skipped; it checks that every
section runs, its figures are not the ones to quote. A section that
fails is recorded as {"error": ...} and the exit status is 1 (each section runs in its own
process, so its peak memory is its own); a section that cannot run here
(no CUDA, no node) is recorded as {"skipped": reason}.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks import (  # noqa: E402
    bench_data,
    bench_epnp,
    bench_inference,
    bench_node,
    bench_refine,
    bench_spconv,
    bench_synthetic,
    bench_training,
)
from benchmarks.inputs import write_synthetic  # noqa: E402
from benchmarks.recorded import with_recorded  # noqa: E402
from benchmarks.report import markdown  # noqa: E402
from nclr_core.atomic_write import write_text_atomic  # noqa: E402

SECTIONS = ("epnp", "inference", "node", "training", "data", "spconv", "refine")
# by --quick; at least one training batch of the CPU config (4)
SYNTHETIC_FRAMES = {True: 4, False: 8}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """The machine and the library versions that matter for the figures."""
    import torch

    described = bench_synthetic.machine()
    described.update({
        "memory_gib": _mem_total_gib(),
        "load_average_1_5_15min": list(os.getloadavg()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "spconv": _version("spconv"),
        "opencv": _version("opencv-python-headless"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    })
    return described


def run_section(name: str, quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """One section's result, or {"error": ...} when it raised."""
    runners = {
        "epnp": lambda: bench_epnp.run(quick),
        "inference": lambda: bench_inference.run(quick, synthetic_root),
        "node": lambda: bench_node.run(quick, synthetic_root),
        "training": lambda: bench_training.run(quick, synthetic_root),
        "data": lambda: bench_data.run(quick, synthetic_root),
        "spconv": lambda: bench_spconv.run(quick, synthetic_root),
        "refine": lambda: bench_refine.run(quick, synthetic_root),
    }
    try:
        return runners[name]()
    except Exception as err:  # noqa: BLE001 - recorded, the other sections still run
        return {"error": f"{type(err).__name__}: {err}"}


def run_sections(names: list[str], quick: bool, synthetic_root: Path, tmp: Path
                 ) -> dict[str, Any]:
    """Each section in its own process (its peak memory is its own), with its wall time."""
    results: dict[str, Any] = {}
    for name in names:
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        out = tmp / f"{name}.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", name,
                               "--synthetic-root", str(synthetic_root), "--out", str(out),
                               *(["--quick"] if quick else [])], cwd=REPO)
        if out.is_file():
            section = json.loads(out.read_text())
        else:
            section = {"error": f"the section's process exited with status {proc.returncode} "
                                "without a result"}
        section["section_wall_s"] = time.perf_counter() - t0
        print(f"[benchmarks] {name}: {section['section_wall_s']:.1f} s"
              + (f" ERROR {section['error']}" if "error" in section else ""),
              file=sys.stderr, flush=True)
        results[name] = section
    return results


def document(result: dict[str, Any], tables: str) -> str:
    """BENCHMARKS.md: command, machine, caveats, then the tables."""
    m = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in m["load_average_1_5_15min"])
    load_end = ", ".join(f"{v:.2f}" for v in result["load_average_at_end"])
    return (
        "# Benchmarks\n\n"
        "Generated by `benchmarks/run.py` from its `benchmarks.json`; do not edit by hand.\n\n"
        f"Command: `{result['command']}` ({'quick' if result['quick'] else 'full'} run, "
        f"{result['wall_s']:.0f} s, finished {result['finished_utc']}).\n\n"
        "Machine:\n\n"
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpus_used']} usable), "
        f"{m['memory_gib']:.1f} GiB memory\n"
        f"- GPU: {m['cuda'] or 'none (GPU rows are skipped)'}\n"
        f"- Python {m['python']}, torch {m['torch']} (intra-op threads: {m['torch_threads']}, "
        f"OMP_NUM_THREADS={m['OMP_NUM_THREADS']}), spconv {m['spconv']}, "
        f"OpenCV {m['opencv']}, NumPy {m['numpy']}\n"
        f"- {m['platform']}\n"
        f"- load average (1, 5, 15 min) at start: {load}; at end: {load_end}\n\n"
        "Each figure is a median over repeats after a warm-up; every comparison is a ratio "
        "measured in the same run. The load average shows whether other processes shared the "
        "CPUs: a load above the CPU count means the figures are slower and noisier than on an "
        "idle machine (ratios within one run are less affected than absolute times). "
        "Threads: with other processes on the cores, torch's intra-op threads make spconv's "
        "CPU path (many small parallel regions) slower by orders of magnitude, so on a shared "
        "machine run with OMP_NUM_THREADS=1; the spconv section compares one thread with "
        "every usable CPU in the same run. Peak memory is the resident-set high-water mark of the "
        "section's own process (Python, libraries, model and data included).\n\n"
        + tables)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (benchmarks.json, .md)")
    p.add_argument("--quick", action="store_true", help="small repeats and sizes (CI)")
    p.add_argument("--update-doc", action="store_true",
                   help=f"also render {REPO.name}/BENCHMARKS.md")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--worker", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--synthetic-root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # one section in this process; --out is its JSON file
        section = run_section(args.worker, args.quick, args.synthetic_root)
        write_text_atomic(args.out, json.dumps(section) + "\n")
        return 0
    names = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        p.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None
                                                           else argv)])
    if "OMP_NUM_THREADS" in os.environ:
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    start = time.perf_counter()
    result: dict[str, Any] = {"command": command, "quick": args.quick, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="nclr_bench_") as tmp:
        print("[benchmarks] writing the synthetic frames ...", file=sys.stderr, flush=True)
        synthetic_root = write_synthetic(Path(tmp) / "synthetic", SYNTHETIC_FRAMES[args.quick])
        result["sections"] = run_sections(names, args.quick, synthetic_root, Path(tmp))
    result["load_average_at_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - start
    result["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tables = markdown(result)
    out = Path(args.out)
    write_text_atomic(out / "benchmarks.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "benchmarks.md", tables)
    if args.update_doc:  # the recorded runs of bench_dds.py / soak_node.py stay at the end
        write_text_atomic(REPO / "BENCHMARKS.md", with_recorded(document(result, tables)))
    print(tables)
    failed = [k for k, v in result["sections"].items() if "error" in v]
    if failed:
        print(f"[benchmarks] failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
