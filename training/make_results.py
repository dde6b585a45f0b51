"""Generate RESULTS.md from the runs' metrics.json files; never type a figure by hand.

    python training/make_results.py [--manifest training/results_manifest.yaml] [--out RESULTS.md]

*(decision)* The manifest (YAML) lists every row that RESULTS.md should have, so that a
missing run shows as "not run" instead of disappearing; folders are not discovered.
Paths are relative to the current folder (run it from the repository root, where the
commands run). Layout:

    title: text
    intro: text (optional)
    tables:
      - title: text
        kind: calibration          # rows read one section of an evaluate_calibration.py output
        columns: [match_acc_5px, rre_euler_deg_mean, ...]   # optional, see CALIBRATION_COLUMNS
        notes: text                # optional prose under the table
        rows:
          - name: NCLR (LTA + soft)
            metrics: runs/eval/nclr/metrics.json
            section: registration  # dotted path inside the file, e.g. baseline_cosine_hard.online
            command: python training/evaluate_calibration.py ...  # used when the file has none
      - title: text
        kind: seeded_calibration   # calibration columns, mean ± std over seeds per row
        seeds: [0, 1, 2]
        columns: [success_rate, dense_match_acc_1px, ...]
        rows:
          - name: base
            metrics: runs/eval/ablation_base_s{seed}/metrics.json
            section: registration
            command: python training/evaluate_calibration.py ...  # when the file has none
            trained_by: python training/pretrain.py ... --set seed={seed}  # optional
      - title: text
        kind: label_efficiency     # finetune_seg.py outputs: mean ± std over seeds
        metric: miou               # optional: miou (default), pq, sq, rq,
                                   # validation.best_miou, or a list of them
        fractions: [0.01, 0.1]
        seeds: [0, 1, 2]
        rows:
          - name: scratch
            init: scratch          # optional check of the files' `init`: scratch | pretrained
            metrics: runs/ft/scratch_{percent}pc_s{seed}/metrics.json
            command: python training/finetune_seg.py ... --label-fraction {fraction} --seed {seed}
        gains:                     # optional: paired per-seed differences of two rows
          - {name: pre-trained − scratch, of: NCLR, minus: scratch}
        steps: true                # optional: a table of planned / trained / kept steps

      - title: text
        kind: segmentation         # evaluate_segmentation.py outputs: mIoU, PQ, class IoUs
        rows:
          - {name: shipped model, metrics: results/eval_seg/x/metrics.json}

In templates `{fraction}` is the fraction as written in the manifest, `{percent}` the
fraction in per cent (`0.01` -> `1`), `{seed}` the seed. A gain is the mean ± sample std over
the seeds both rows ran of (row `of` − row `minus`): the two runs of a seed share their
labelled scans, so the difference is paired. Every figure of RESULTS.md carries a
reference to its metrics.json file(s) and the command that produced them.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nclr_core.atomic_write import write_text_atomic

DEFAULT_MANIFEST = "training/results_manifest.yaml"
NOT_RUN = "not run"
NOT_AVAILABLE = "n/a"

# metrics.json key -> (column header, format); rates are shown in per cent.
CALIBRATION_COLUMNS: dict[str, tuple[str, str]] = {
    "num_frames": ("frames", "{:d}"),
    "match_err_px_mean": ("match err (px)", "{:.2f}"),
    "match_acc_5px": ("match acc @5 px", "{:.1%}"),
    "rre_euler_deg_mean": ("RRE mean (°)", "{:.2f}"),
    "rre_euler_deg_median": ("RRE median (°)", "{:.2f}"),
    "rre_geodesic_deg_mean": ("RRE geodesic mean (°)", "{:.2f}"),
    "rte_m_mean": ("RTE mean (m)", "{:.3f}"),
    "rte_m_median": ("RTE median (m)", "{:.3f}"),
    "success_rate": ("success", "{:.1%}"),
    "point_overlap_iou": ("point overlap IoU", "{:.3f}"),
    "point_overlap_auc": ("point overlap AUC", "{:.3f}"),
    "image_overlap_iou": ("image overlap IoU", "{:.3f}"),
    "accepted_rate": ("accepted", "{:.1%}"),
    "prior_rre_euler_deg_mean": ("prior RRE mean (°)", "{:.2f}"),
    "prior_rte_m_mean": ("prior RTE mean (m)", "{:.3f}"),
    "dense_match_acc_1px": ("dense acc @1 px", "{:.1%}"),
    "dense_match_acc_3px": ("dense acc @3 px", "{:.1%}"),
    "dense_match_acc_5px": ("dense acc @5 px", "{:.1%}"),
    "dense_match_err_px_median": ("dense err median (px)", "{:.2f}"),
    "dense_match_bias_px": ("dense bias u, v (px)", "{:+.2f}"),
    # online calls (evaluate_calibration.py --regime online, per call or per stage)
    "num_calls": ("calls", "{:d}"),
    "estimate_rre_geodesic_deg_median": ("rotation median (°)", "{:.3f}"),
    "estimate_rre_geodesic_deg_p90": ("rotation p90 (°)", "{:.3f}"),
    "estimate_rte_m_median": ("translation median (m)", "{:.4f}"),
    "estimate_rte_m_p90": ("translation p90 (m)", "{:.4f}"),
    "prior_rre_geodesic_deg_median": ("prior rotation (°)", "{:.1f}"),
    "prior_rte_m_median": ("prior translation (m)", "{:.2f}"),
    "worse_than_prior_rate": ("worse than prior", "{:.1%}"),
    "better_than_prior_rotation_rate": ("rotation better than prior", "{:.1%}"),
    "worse_than_previous_stage_rate": ("worse than previous stage", "{:.1%}"),
    "coverage_3sigma": ("3σ covers the error", "{:.1%}"),
}
DEFAULT_COLUMNS = ("num_frames", "match_err_px_mean", "match_acc_5px", "rre_euler_deg_mean",
                   "rre_euler_deg_median", "rte_m_mean", "rte_m_median", "success_rate",
                   "point_overlap_iou", "point_overlap_auc", "image_overlap_iou")


class ManifestError(ValueError):
    """A manifest, or a metrics.json it names, that cannot be turned into RESULTS.md."""


@dataclass
class Source:
    """One metrics.json behind a figure: its path, what was read and the command."""

    path: str
    what: str
    command: str
    status: str  # "ok" or why it was not used


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ManifestError(f"{where}: missing '{key}'")
    return mapping[key]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"{path}: not a readable metrics.json ({err})") from err
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: metrics.json must hold an object")
    return data


def _section(data: dict, dotted: str) -> dict | None:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data if isinstance(data, dict) else None


def _format(value: Any, fmt: str) -> str:
    if isinstance(value, list):  # a vector such as the bias [u, v]
        return ", ".join(_format(v, fmt) for v in value) if value else NOT_AVAILABLE
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_AVAILABLE
    if fmt == "{:d}":
        return str(int(value))
    return fmt.format(float(value))


def _cite(sources: list[Source], source: Source) -> str:
    sources.append(source)
    return f"[{len(sources)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def calibration_table(spec: dict, where: str, sources: list[Source]) -> list[str]:
    """Markdown lines of a `kind: calibration` table (rows cite their sources)."""
    columns = _columns(spec, where)
    body = []
    for i, row in enumerate(_require(spec, "rows", where)):
        at = f"{where}, row {i + 1}"
        name = str(_require(row, "name", at))
        path = str(_require(row, "metrics", at))
        section = str(_require(row, "section", at))
        planned = str(row.get("command", ""))
        file = Path(path)
        if not file.is_file():
            ref = _cite(sources, Source(path, section, planned, NOT_RUN))
            body.append([f"{name} {ref}"] + [NOT_RUN] * len(columns))
            continue
        data = _read_json(file)
        values = _section(data, section)
        command = str(data.get("command") or planned)
        if values is None:
            ref = _cite(sources, Source(path, section, command,
                                        f"{NOT_RUN}: the file has no section '{section}'"))
            body.append([f"{name} {ref}"] + [NOT_RUN] * len(columns))
            continue
        if not command:
            raise ManifestError(f"{at}: {path} records no command and the manifest gives "
                                "none; a figure must be traceable to its command")
        ref = _cite(sources, Source(path, section, command, "ok"))
        body.append([f"{name} {ref}"] + [_format(values.get(c), CALIBRATION_COLUMNS[c][1])
                                         for c in columns])
    return _table(["method"] + [CALIBRATION_COLUMNS[c][0] for c in columns], body)


def _columns(spec: dict, where: str) -> list[str]:
    columns = spec.get("columns", list(DEFAULT_COLUMNS))
    unknown = [c for c in columns if c not in CALIBRATION_COLUMNS]
    if unknown:
        raise ManifestError(f"{where}: unknown columns {unknown}; known: "
                            f"{sorted(CALIBRATION_COLUMNS)}")
    return columns


def _mean_std(values: list[Any], fmt: str) -> str:
    """`mean ± sample std` of per-seed values (numbers, or equal-length vectors)."""
    array = np.asarray(values, dtype=np.float64)
    mean = array.mean(axis=0)
    if len(values) < 2:
        return _format(mean.tolist(), fmt)
    std = array.std(axis=0, ddof=1)
    if fmt.endswith("%}"):  # rates: the spread in percentage points
        spread = np.vectorize(lambda v: f"{100 * v:.1f}")(std)
    else:
        spread = np.vectorize(lambda v: fmt.replace("+", "").format(v))(std)
    if array.ndim == 1:
        return f"{_format(float(mean), fmt)} ± {spread}"
    return ", ".join(f"{_format(float(m), fmt)} ± {d}" for m, d in zip(mean, spread,
                                                                        strict=True))


def seeded_calibration_table(spec: dict, where: str, sources: list[Source]) -> list[str]:
    """Markdown lines of a `kind: seeded_calibration` table: per row and column, the mean ±
    sample std over the seeds of an evaluate_calibration.py section."""
    columns = _columns(spec, where)
    seeds = [int(s) for s in _require(spec, "seeds", where)]
    body = []
    for i, row in enumerate(_require(spec, "rows", where)):
        at = f"{where}, row {i + 1}"
        section = str(_require(row, "section", at))
        first = len(sources) + 1
        found = []
        for seed in seeds:
            path = _fill(str(_require(row, "metrics", at)), 0, seed)
            command = _fill(str(row.get("command", "")), 0, seed)
            what = f"{section}, seed {seed}"
            if row.get("trained_by"):
                what += f"; the checkpoint of `{_fill(str(row['trained_by']), 0, seed)}`"
            data = _read_json(Path(path)) if Path(path).is_file() else {}
            values = _section(data, section)
            if values is None:
                sources.append(Source(path, what, command, NOT_RUN))
                continue
            command = str(data.get("command") or command)
            if not command:
                raise ManifestError(f"{at}: no command for {path}; a figure must be "
                                    "traceable to its command")
            sources.append(Source(path, what, command, "ok"))
            found.append(values)
        refs = f"[{first}–{len(sources)}]" if len(sources) > first else f"[{first}]"
        cells = [f"{_require(row, 'name', at)} {refs}"]
        for c in columns:
            values = [v.get(c) for v in found if v.get(c) is not None]
            cells.append(_mean_std(values, CALIBRATION_COLUMNS[c][1]) if values else NOT_RUN)
        if found and len(found) < len(seeds):
            cells[0] += f" ({len(found)} of {len(seeds)} seeds)"
        body.append(cells)
    lines = _table(["configuration"] + [CALIBRATION_COLUMNS[c][0] for c in columns], body)
    return lines + ["", f"Mean ± sample standard deviation over seeds {seeds}."]


def _fill(template: str, fraction: Any, seed: int) -> str:
    return template.format(fraction=fraction, percent=f"{float(fraction) * 100:g}", seed=seed)


# metric key (a dotted path into metrics.json) -> column name
METRICS = {"miou": "mIoU", "pq": "PQ", "sq": "SQ", "rq": "RQ",
           "validation.best_miou": "validation mIoU"}


def _metric(data: dict, key: str) -> float | None:
    """The value at the dotted `key` of a metrics.json, None where it is absent or null."""
    for part in key.split("."):
        if not isinstance(data, dict) or data.get(part) is None:
            return None
        data = data[part]
    return float(data)


def _seed_run(row: dict, fraction: Any, seed: int, metric: str, at: str,
              sources: list[Source]) -> dict | None:
    """The metrics.json of one (fraction, seed) run, or None when it was not run or has no
    `metric`; checks its labels."""
    path = _fill(str(_require(row, "metrics", at)), fraction, seed)
    command = _fill(str(_require(row, "command", at)), fraction, seed)
    what = f"fraction {fraction}, seed {seed}"
    if not Path(path).is_file():
        sources.append(Source(path, what, command, NOT_RUN))
        return None
    data = _read_json(Path(path))
    for key in ("miou", "label_fraction", "seed", "init"):
        if key not in data:
            raise ManifestError(f"{path}: no '{key}' (not a finetune_seg.py metrics.json)")
    if not math.isclose(float(data["label_fraction"]), float(fraction), rel_tol=1e-9) \
            or int(data["seed"]) != seed:
        raise ManifestError(f"{path}: holds label_fraction {data['label_fraction']}, seed "
                            f"{data['seed']}, but the manifest places it at {what}")
    expected = row.get("init")
    if expected is not None:
        is_scratch = data["init"] == "scratch"
        if expected not in ("scratch", "pretrained") or is_scratch != (expected == "scratch"):
            raise ManifestError(f"{path}: init {data['init']!r}, the manifest row expects "
                                f"{expected!r} (scratch | pretrained)")
    if _metric(data, metric) is None:
        sources.append(Source(path, what, command,
                              f"n/a: the run recorded no {METRICS[metric]}"))
        return None
    sources.append(Source(path, what, command, "ok"))
    return data


def _percent_over_seeds(values: list[float], expected: int, sign: bool = False) -> str:
    """'m ± s' in per cent of `values` (fractions), with '(k of n seeds)' when some are
    missing; a leading + with `sign`."""
    mean = 100.0 * float(np.mean(values))
    text = f"{mean:+.1f}" if sign else f"{mean:.1f}"
    if len(values) > 1:
        text += f" ± {100.0 * float(np.std(values, ddof=1)):.1f}"
    if len(values) < expected:
        text += f" ({len(values)} of {expected} seeds)"
    return text


def _steps_cell(runs: list[dict]) -> str:
    """'planned / trained / kept' steps, means over the runs (ranges when they differ)."""
    def span(values: list[int]) -> str:
        low, high = min(values), max(values)
        return f"{np.mean(values):.0f}" + (f" ({low}–{high})" if low != high else "")

    try:
        planned = [int(r["schedule"]["total_steps"]) for r in runs]
        trained = [int(r["steps"]) for r in runs]
        kept = [int(r["checkpoint_step"]) for r in runs]
    except (KeyError, TypeError):
        return NOT_AVAILABLE
    return f"{span(planned)} / {span(trained)} / {span(kept)}"


def _metric_list(spec: dict, where: str) -> list[str]:
    metrics = spec.get("metric", "miou")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ManifestError(f"{where}: metric {unknown or metrics!r} is not one of "
                            f"{sorted(METRICS)}")
    return metrics


def label_efficiency_table(spec: dict, where: str, sources: list[Source]) -> list[str]:
    """Markdown lines of a `kind: label_efficiency` table: mean ± sample std (%) of each
    metric per row and fraction, optional paired gains and a table of steps."""
    fractions = _require(spec, "fractions", where)
    seeds = [int(s) for s in _require(spec, "seeds", where)]
    metrics = _metric_list(spec, where)
    runs: dict[str, list[dict[int, dict]]] = {}  # row name -> per fraction: seed -> data
    body = []
    for i, row in enumerate(_require(spec, "rows", where)):
        at = f"{where}, row {i + 1}"
        name = str(_require(row, "name", at))
        cells, runs[name] = [name], []
        for fraction in fractions:
            first = len(sources) + 1
            found = {seed: data for seed in seeds
                     if (data := _seed_run(row, fraction, seed, metrics[0], at, sources))}
            runs[name].append(found)
            refs = f"[{first}–{len(sources)}]" if len(sources) > first else f"[{first}]"
            for metric in metrics:
                values = [v for d in found.values() if (v := _metric(d, metric)) is not None]
                cells.append(f"{_percent_over_seeds(values, len(seeds))} {refs}" if values
                             else f"{NOT_RUN} {refs}")
        body.append(cells)
    for i, gain in enumerate(spec.get("gains", [])):
        at = f"{where}, gain {i + 1}"
        of, minus = str(_require(gain, "of", at)), str(_require(gain, "minus", at))
        for key in (of, minus):
            if key not in runs:
                raise ManifestError(f"{at}: no row named {key!r}")
        cells = [f"**{_require(gain, 'name', at)}** (paired by seed)"]
        for k in range(len(fractions)):
            a, b = runs[of][k], runs[minus][k]
            for metric in metrics:
                diffs = [_metric(a[s], metric) - _metric(b[s], metric) for s in seeds
                         if s in a and s in b and _metric(a[s], metric) is not None
                         and _metric(b[s], metric) is not None]
                cells.append(f"**{_percent_over_seeds(diffs, len(seeds), sign=True)}**" if diffs
                             else NOT_RUN)
        body.append(cells)
    header = ["init"] + [f"{METRICS[m]} (%) @ {float(f) * 100:g} % labels"
                         for f in fractions for m in metrics]
    lines = _table(header, body)
    lines += ["", f"Mean ± sample standard deviation over seeds {seeds}."]
    if spec.get("steps"):
        steps_body = [[name] + [_steps_cell(list(found.values())) if found else NOT_RUN
                                for found in per_fraction]
                      for name, per_fraction in runs.items()]
        lines += ["", "Optimiser steps, planned / trained / of the kept checkpoint (mean over "
                  "seeds, range in brackets):", ""]
        lines += _table(["init"] + [f"@ {float(f) * 100:g} % labels" for f in fractions],
                        steps_body)
    return lines


def segmentation_table(spec: dict, where: str, sources: list[Source]) -> list[str]:
    """Markdown lines of a `kind: segmentation` table: one row per evaluate_segmentation.py
    metrics.json (scans, mIoU, PQ, then the IoU of every class, in %)."""
    rows, names = [], None
    for i, row in enumerate(_require(spec, "rows", where)):
        at = f"{where}, row {i + 1}"
        name, path = str(_require(row, "name", at)), str(_require(row, "metrics", at))
        planned = str(row.get("command", ""))
        if not Path(path).is_file():
            rows.append((f"{name} {_cite(sources, Source(path, 'all', planned, NOT_RUN))}",
                         None))
            continue
        data = _read_json(Path(path))
        for key in ("miou", "per_class_iou", "num_frames"):
            if key not in data:
                raise ManifestError(f"{path}: no '{key}' (not an evaluate_segmentation.py "
                                    "metrics.json)")
        if names is None:
            names = list(data["per_class_iou"])
        elif list(data["per_class_iou"]) != names:
            raise ManifestError(f"{path}: other classes than the table's first row")
        command = str(data.get("command") or planned)
        if not command:
            raise ManifestError(f"{at}: {path} records no command and the manifest gives "
                                "none; a figure must be traceable to its command")
        rows.append((f"{name} {_cite(sources, Source(path, 'all', command, 'ok'))}", data))
    names = names or []
    percent = "{:.1%}"
    body = []
    for label, data in rows:
        if data is None:
            body.append([label] + [NOT_RUN] * (3 + len(names)))
            continue
        body.append([label, _format(data["num_frames"], "{:d}"),
                     _format(data["miou"], percent), _format(data.get("pq"), percent)]
                    + [_format(data["per_class_iou"][n], percent) for n in names])
    return _table(["model", "scans", "mIoU", "PQ"] + [f"{n} IoU" for n in names], body)


TABLE_KINDS = {"calibration": calibration_table, "label_efficiency": label_efficiency_table,
               "seeded_calibration": seeded_calibration_table,
               "segmentation": segmentation_table}


def render(manifest: dict, manifest_path: str, command: str) -> str:
    """RESULTS.md text from a parsed manifest (paths relative to the current folder)."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{manifest_path}: the manifest must be a mapping")
    lines = [f"# {manifest.get('title', 'Results')}", "",
             f"Generated by `{command}` from the `metrics.json` files listed under each table "
             f"(manifest: `{manifest_path}`). Do not edit by hand: re-run the command.", ""]
    if manifest.get("intro"):
        lines += [str(manifest["intro"]).strip(), ""]
    tables = _require(manifest, "tables", manifest_path)
    if not isinstance(tables, list) or not tables:
        raise ManifestError(f"{manifest_path}: 'tables' must be a non-empty list")
    for t, spec in enumerate(tables):
        where = f"{manifest_path}, table {t + 1}"
        kind = _require(spec, "kind", where)
        if kind not in TABLE_KINDS:
            raise ManifestError(f"{where}: kind {kind!r} is not one of {sorted(TABLE_KINDS)}")
        sources: list[Source] = []
        lines += [f"## {_require(spec, 'title', where)}", ""]
        lines += TABLE_KINDS[kind](spec, where, sources)
        if spec.get("notes"):
            lines += ["", str(spec["notes"]).strip()]
        lines += ["", "Sources:", ""]
        for n, source in enumerate(sources, 1):
            status = "" if source.status == "ok" else f" — **{source.status}**"
            run = f"`{source.command}`" if source.command else "(no command given)"
            lines.append(f"{n}. `{source.path}` ({source.what}){status}: {run}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="YAML manifest of rows")
    parser.add_argument("--out", default="RESULTS.md", help="markdown file to write")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "training/make_results.py", *argv])
    try:
        try:
            manifest = yaml.safe_load(Path(args.manifest).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ManifestError(f"{args.manifest}: cannot read the manifest ({err})") from err
        text = render(manifest, args.manifest, command)
    except ManifestError as err:
        print(f"make_results.py: error: {err}", file=sys.stderr)
        return 2
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
