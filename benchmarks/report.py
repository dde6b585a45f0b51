"""Markdown tables of a benchmark result (the dict that run.py writes as benchmarks.json)."""
from __future__ import annotations

from typing import Any

ACCURACY_SLACK = 1e-3  # relative: ours "at least as accurate" within rounding of the medians


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _g(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _skipped_or_error(section: Any) -> str | None:
    if isinstance(section, dict) and "skipped" in section:
        return f"skipped: {section['skipped']}\n"
    if isinstance(section, dict) and "error" in section:
        return f"**error**: `{section['error']}`\n"
    return None


def not_worse(ours: dict[str, float], reference: dict[str, float]) -> bool:
    """Both median errors of ours within ACCURACY_SLACK (relative) of the reference's or below."""
    return all(ours[k] <= reference[k] * (1 + ACCURACY_SLACK) + 1e-12 for k in ours)


def epnp(section: dict[str, Any]) -> str:
    acc = section["accuracy"]
    names = ("ours_epnp_gn", "opencv_epnp", "opencv_epnp_iterative")
    rows = [[r["n"], r["noise_px"], *[f"{_g(r[k]['rotation_error_deg_median'])} / "
                                      f"{_g(r[k]['translation_error_m_median'])}"
                                      for k in names],
             "yes" if not_worse(r["ours_epnp_gn"], r["opencv_epnp_iterative"]) else "**no**"]
            for r in acc]
    out = ("Median rotation error (deg) / translation error (m) over "
           f"{acc[0]['problems']} random problems per cell.\n\n")
    out += _table(["N", "noise px", "ours (EPnP + GN)", "OpenCV EPNP", "OpenCV EPNP+ITERATIVE",
                   "ours <= EPNP+ITERATIVE"], rows)
    thr = section["throughput"]
    as_good = sum(not_worse(r["ours_epnp_gn"], r["opencv_epnp_iterative"]) for r in acc)
    ratios = [r["speed_ratio_ours_over_opencv_epnp_iterative"] for r in thr]
    ratios_plain = [r["speed_ratio_ours_over_opencv_epnp"] for r in thr]
    out += (f"\nSummary: ours is at least as accurate as OpenCV EPNP+ITERATIVE in {as_good} of "
            f"{len(acc)} cells (within {ACCURACY_SLACK:g} relative / 1e-12 absolute). Batched "
            f"throughput is {_g(min(ratios), 2)}x-{_g(max(ratios), 2)}x OpenCV EPNP+ITERATIVE's "
            f"and {_g(min(ratios_plain), 2)}x-{_g(max(ratios_plain), 2)}x OpenCV EPNP's "
            f"({'slower' if max(ratios) < 1 else 'not slower'} than the OpenCV loop on this "
            "CPU; ours runs in float64 through PyTorch, torch threads: "
            f"{section['settings']['torch_threads']}; OpenCV solves one problem at a time in "
            "C++).\n")
    rows = [[r["n"], r["batch"], *[_g(r[k]["problems_per_s"]) for k in names],
             _g(r["speed_ratio_ours_over_opencv_epnp"]),
             _g(r["speed_ratio_ours_over_opencv_epnp_iterative"])] for r in thr]
    out += "\nThroughput (problems/s; ours batched in one call, OpenCV looped), 1 px noise.\n\n"
    out += _table(["N", "batch", "ours", "OpenCV EPNP", "OpenCV EPNP+ITERATIVE",
                   "ours / EPNP", "ours / EPNP+ITERATIVE"], rows)
    solvers = ("ours_ransac", "opencv_ransac", "opencv_usac_magsac")
    rows = [[r["n"], f"{r['outlier_ratio']:.0%}", r["problems"],
             *[f"{_g(r[k]['rotation_error_deg_median'])} / "
               f"{_g(r[k]['translation_error_m_median'])}" for k in solvers],
             *[_ms(r[k]["seconds_per_problem_median"]) for k in solvers],
             _g(r["speed_ratio_ours_over_opencv"])] for r in section["ransac"]]
    out += ("\nRobust PnP (threshold 8 px, at most 1000 hypotheses, confidence 0.999, 1 px "
            "noise): median errors (deg / m), ms per problem, speed ratio ours / OpenCV "
            "EPnP-RANSAC. Ours = `pnp_ransac.solve_pnp_ransac` (OpenCV USAC, graph-cut local "
            "optimisation, then Levenberg-Marquardt on the inliers).\n\n")
    out += _table(["N", "outliers", "problems", "ours", "OpenCV EPnP RANSAC",
                   "OpenCV USAC_MAGSAC", "ours ms", "EPnP RANSAC ms", "MAGSAC ms",
                   "ours / EPnP RANSAC"], rows)
    return out


def _inference_cases(cases: dict[str, Any]) -> str:
    stage_keys = ("image_encoder_s", "point_encoder_s", "fusion_s", "matching_s", "pnp_s",
                  "total_s")
    rows, notes = [], []
    for name, case in cases.items():
        why = _skipped_or_error(case)
        if why:
            notes.append(f"- {name}: {why.strip()}")
            continue
        s = case["stages_median_s"]
        w, h = case["network_image_wh"]
        rows.append([name, f"{case['network_points']} pts, {w}x{h}",
                     *[_ms(s[k]) for k in stage_keys], _g(case["frames_per_s"]),
                     f"{case['memory']['peak_rss_mib']:.0f}",
                     _ms(case["calibrator"]["seconds_median"])])
    out = _table(["case", "network input", "image enc", "point enc", "fusion", "matching",
                  "PnP", "total", "frames/s", "peak RSS MiB", "Calibrator ms"], rows)
    return out + ("\n" + "\n".join(notes) + "\n" if notes else "")


def inference(section: dict[str, Any]) -> str:
    out = "Milliseconds per stage (median), one frame, `torch.no_grad()`.\n\n"
    for device in ("cpu", "gpu"):
        why = _skipped_or_error(section.get(device))
        out += f"\n**{device.upper()}**" + (f": {why}" if why else "\n\n" +
                                             _inference_cases(section[device]))
    first = next((c for c in section["cpu"].values() if "input" in c), None)
    if first:
        out += f"\nInput: {first['input']} ({first['raw_points']} points).\n"
    return out + (
        "\nimage enc = ResNet + FPN decoder; point enc = voxelisation + sparse U-Net encoder "
        "and decoder; matching = overlap heads, similarity and soft matching; PnP = the "
        "weighted EPnP on the matches; total = the whole forward. Calibrator = "
        "`Calibrator.calibrate` end to end on the raw frame (fit to the network, forward, "
        "RANSAC-PnP with the default settings). The weights are random (seed 0): the network's "
        "time does not depend on them, but the RANSAC's adaptive stop does (it follows the "
        "consensus found), so a trained model's Calibrator time may differ.\n")


def node(section: dict[str, Any]) -> str:
    rows = []
    for stages, run in section["runs"].items():
        w, h = run["image_wh"]
        rows.append([stages, run["model"], f"{w}x{h}, {run['points_per_cloud']} points",
                     run["input_rate_hz"], run["seconds"], run["pairs_published"],
                     run["pairs_processed"], f"{run['processed_share']:.1%}",
                     _g(run["processed_pairs_per_s"]), _g(run["last_latency_s"])])
    return _table(["stages", "model", "input", "input Hz", "seconds", "published",
                   "processed", "processed share", "processed pairs/s", "last latency s"],
                  rows)


def training(section: dict[str, Any]) -> str:
    out = ""
    for device in ("cpu", "gpu"):
        why = _skipped_or_error(section.get(device))
        if why:
            out += f"\n**{device.upper()}**: {why}"
            continue
        rows = [[name, c["batch_size"], c["points_per_batch"], "x".join(map(str, c["image_hw"])),
                 ", ".join(c["losses"]),
                 _ms(c["step_s"]["median_s"]), f"{c['memory']['peak_rss_mib']:.0f}",
                 (f"{c['memory']['cuda_peak_allocated_mib']:.0f}"
                  if "cuda_peak_allocated_mib" in c["memory"] else "n/a")]
                for name, c in section[device].items()]
        out += f"\n**{device.upper()}**\n\n" + _table(
            ["config", "batch", "points", "image HxW", "loss terms", "step ms",
             "peak RSS MiB", "CUDA peak MiB"], rows)
    return out + ("\nOne step = forward with the config's loss terms (the pose loss past its "
                  "warm-up, where the config has it) + backward + gradient clipping + AdamW "
                  "step, float32, on synthetic training pairs.\n")


def data(section: dict[str, Any]) -> str:
    rows = []
    for name, r in section["readers"].items():
        why = _skipped_or_error(r)
        rows.append([name, why.strip()] + [""] * 3 if why else
                    [name, r["frames"], r["points_first_frame"], _g(r["raw_frames_per_s"]),
                     _g(r["pairs_frames_per_s"])])
    out = _table(["reader", "frames", "points", "raw frames/s", "pairs frames/s"], rows)
    g = section["synthetic_generation"]
    why = _skipped_or_error(g)
    if why:
        return out + "\nSynthetic generation: " + why
    s = g["settings"]
    return out + (f"\nSynthetic generation ({s['width']}x{s['height']}, {s['beams']} beams): "
                  f"{_g(g['frames_per_s_generate_median'])} frames/s generated, "
                  f"{_g(g['frames_per_s_generate_and_write_median'])} frames/s generated and "
                  f"written ({g['cpus_available']} CPUs available).\n")


def spconv(section: dict[str, Any]) -> str:
    rows = [[threads, _ms(r["forward_inference_s"]["median_s"]),
             _ms(r["forward_train_s_median"]), _ms(r["backward_s_median"]),
             f"{r['memory_train']['peak_rss_mib']:.0f}"]
            for threads, r in section["by_threads"].items()]
    out = (f"{section['points']} points / {section['voxels']} voxels ({section['frames']} "
           f"frames, {section['voxel_size_m']} m voxels).\n\n")
    out += _table(["torch threads", "forward (no_grad) ms", "forward (autograd) ms",
                   "backward ms", "peak RSS MiB (train)"], rows)
    speedup = section.get("speedup_most_threads_over_one")
    if speedup:
        out += (f"\nSpeed-up of the most threads over one (same run): forward "
                f"{_g(speedup['forward_inference'])}x, backward {_g(speedup['backward'])}x "
                "(below 1: more threads are slower, e.g. when other processes hold the "
                "cores).\n")
    return out


def refine(section: dict[str, Any]) -> str:
    s = section
    errors = (f"{_g(s['rotation_error_deg'])} deg / {_g(s['translation_error_m'])} m"
              if "rotation_error_deg" in s else "n/a")
    out = _table(["window", "frames", "points/frame", "image HxW", "wall s (median)",
                  "CPU s (median)", "peak RSS MiB", "result", "error of the maximum"],
                 [[s["source"], s["frames"], f"{s['points_per_frame_median']:.0f}",
                   "x".join(map(str, s["image_hw"])), _g(s["wall_s"]["median_s"]),
                   _g(s["cpu_s_median"]), f"{s['memory']['peak_rss_mib']:.0f}",
                   s["reason"], errors]])
    return out + (f"\nOne `refine` call from a prior {s['prior_deg']} deg / {s['prior_m']} m "
                  "from the truth (default bounds); CPU s is the process's CPU time, less "
                  "sensitive to other processes on the cores than the wall time.\n")


RENDERERS = {
    "epnp": ("EPnP vs OpenCV", epnp),
    "inference": ("Calibration inference", inference),
    "node": ("Node throughput", node),
    "training": ("Training step", training),
    "data": ("Data loading", data),
    "spconv": ("Sparse convolution (point encoder, CPU config)", spconv),
    "refine": ("Training-free refinement (one window)", refine),
}


def markdown(result: dict[str, Any]) -> str:
    """All sections as markdown, in the order of RENDERERS."""
    parts = []
    for key, (title, render) in RENDERERS.items():
        section = result["sections"].get(key)
        why = _skipped_or_error(section) if section is not None else "not run\n"
        wall = section.get("section_wall_s") if isinstance(section, dict) else None
        suffix = f" ({wall:.0f} s)" if wall is not None else ""
        parts.append(f"## {title}{suffix}\n\n" + (why or render(section)))
    return "\n".join(parts)
