"""Markdown summary of an evaluation: aggregates, the per-case table and links to the case pictures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synthct.atomic import write_text_atomic
from synthct.metrics import HIGHER_IS_BETTER, METRIC_KEYS

LABELS = {"mae": "MAE (HU)", "psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM"}
FORMATS = {"mae": "{:.2f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "ms_ssim": "{:.4f}"}


def _fmt(key: str, value: Any) -> str:
    return "—" if value is None else FORMATS[key].format(value)


def _cell(text: str) -> str:
    """Table-safe text: no pipes or line breaks."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(payload: dict[str, Any], pictures: dict[str, str], title: str = "synthct evaluation") -> str:
    """Markdown text for a metrics.json payload; ``pictures`` maps case id → picture path relative to the report."""
    keys = METRIC_KEYS[payload["variant"]]
    lines = [f"# {title}", ""]
    cases = payload.get("cases", {})
    lines.append(
        f"Variant **{payload['variant']}** — {cases.get('scored', 0)} case(s) scored, "
        f"{cases.get('failed', 0)} failed. Metrics inside the body mask; PSNR capped at "
        f"{payload.get('psnr_cap_db', 100):g} dB."
    )
    lines += [
        "",
        "## Aggregates",
        "",
        "| metric | mean ± std | median | 25pc – 75pc | min | max | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        agg = payload["aggregates"][key]
        arrow = "↑" if HIGHER_IS_BETTER[key] else "↓"
        if not agg["count"]:
            lines.append(f"| {LABELS[key]} {arrow} | — | — | — | — | — | 0 |")
            continue
        lines.append(
            f"| {LABELS[key]} {arrow} | {_fmt(key, agg['mean'])} ± {_fmt(key, agg['std'])} | {_fmt(key, agg['50pc'])} "
            f"| {_fmt(key, agg['25pc'])} – {_fmt(key, agg['75pc'])} | {_fmt(key, agg['min'])} "
            f"| {_fmt(key, agg['max'])} | {agg['count']} |"
        )
    lines += [
        "",
        "## Cases",
        "",
        "| case | " + " | ".join(LABELS[k] for k in keys) + " | picture | status |",
        "|---|" + "---|" * len(keys) + "---|---|",
    ]
    for record in payload["results"]:
        case_id = record["case_id"]
        picture = f"[png]({pictures[case_id]})" if case_id in pictures else "—"
        status = "error" if record.get("error") else "ok"
        values = " | ".join(_fmt(k, record.get(k)) for k in keys)
        lines.append(f"| {_cell(case_id)} | {values} | {picture} | {status} |")
    failed = [r for r in payload["results"] if r.get("error")]
    if failed:
        lines += ["", "## Errors", ""]
        lines += [f"- **{_cell(r['case_id'])}**: {_cell(str(r['error']))}" for r in failed]
    if payload.get("dose"):
        lines += _dose_lines(payload)
    if pictures:
        lines += ["", "## Pictures", ""]
        for record in payload["results"]:
            case_id = record["case_id"]
            if case_id in pictures:
                lines += [f"### {_cell(case_id)}", "", f"![{_cell(case_id)}]({pictures[case_id]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _dose_lines(payload: dict[str, Any]) -> list[str]:
    """Dose aggregates (% Rx, %) and per-case dose errors; pictures are ``<ID>_<modality>_dose.png``."""
    lines = ["", "## Dose (plan on CT, recalculated on sCT)", "", "| metric | mean ± std | median | min | max | n |",
             "|---|---|---|---|---|---|"]
    for key, agg in payload["aggregates"].items():
        if not key.startswith(("photon_", "proton_")):
            continue
        if not agg["count"]:
            lines.append(f"| {key} | — | — | — | — | 0 |")
            continue
        lines.append(f"| {key} | {agg['mean']:.2f} ± {agg['std']:.2f} | {agg['50pc']:.2f} | {agg['min']:.2f} "
                     f"| {agg['max']:.2f} | {agg['count']} |")
    lines.append("")
    for record in payload["results"]:
        dose = record.get("dose") or {}
        links = [f"[{m}]({record['case_id']}_{m}_dose.png)" for m in ("photon", "proton")
                 if isinstance(dose.get(m), dict) and dose[m].get("picture")]
        if links:
            lines.append(f"- {_cell(record['case_id'])} dose pictures: " + ", ".join(links))
        if record.get("dose_error"):
            lines.append(f"- **{_cell(record['case_id'])}** dose error: {_cell(str(record['dose_error']))}")
    return lines


def write_report(path: str | os.PathLike[str], payload: dict[str, Any], pictures: dict[str, str]) -> Path:
    """Write the Markdown report atomically; returns its path."""
    path = Path(path)
    write_text_atomic(path, render_report(payload, pictures))
    return path
