"""The evaluation stage: local mode through the ``synthct evaluate`` CLI, container mode as ``python -m
synthct.evaluation``,
bad inputs (each case gets an error record naming the file, the others are still scored), pictures and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthct.evaluation.cases import find_ground_truth, resolve_case_id
from synthct.evaluation.container import build_jobs
from synthct.evaluation.report import render_report
from synthct.evaluation.scoring import build_payload
from train_helpers import HANG_GUARD_S

from synthct import metrics
from synthct.cli import main as synthct_main

SHAPE = (12, 20, 18)
CASE_IDS = ("1PA001", "1PA002", "1PA003")


def _strict_json(path: Path) -> dict[str, Any]:
    def reject(token: str) -> None:
        raise AssertionError(f"{path} holds {token}: not strict JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def _records(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["case_id"]: r for r in payload["results"]}


@pytest.fixture
def dataset(tmp_path: Path, make_body_case: Callable[..., Any], write_image: Callable[..., Path]) -> dict[str, Any]:
    """Ground truth in flat layout (gt/ct, gt/mask) and SynthRAD case folders, predictions, MRs, arrays."""
    arrays = {}
    for index, case_id in enumerate(CASE_IDS):
        ct, sct, mask = make_body_case(SHAPE, seed=index)
        ct, sct = np.rint(ct).astype(np.int16), np.rint(sct).astype(np.int16)
        arrays[case_id] = (ct, sct, mask)
        write_image(ct, tmp_path / "gt" / "ct" / f"{case_id}.mha")
        write_image(mask, tmp_path / "gt" / "mask" / f"{case_id}.mha")
        folder = tmp_path / "gt_cases" / "Task1" / "pelvis" / case_id
        write_image(ct, folder / "ct.nii.gz")
        write_image(mask, folder / "mask.nii.gz")
        write_image(np.clip(ct + 1000, 0, None).astype(np.float32), folder / "mr.nii.gz")
        write_image(sct, tmp_path / "pred" / f"{case_id}.mha")
    return {"root": tmp_path, "arrays": arrays}


def _expected(arrays: tuple[np.ndarray, ...], variant: str = "synthrad2023") -> dict[str, float]:
    ct, sct, mask = arrays
    return metrics.compute_metrics(ct.astype(np.float32), sct.astype(np.float32), mask, variant)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ local mode


def test_local_cli_scores_every_case_and_writes_pictures(dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    out = root / "out" / "metrics.json"
    code = synthct_main(
        ["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt_cases"), "--out", str(out),
         "--pictures", str(root / "pictures"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    payload = _strict_json(out)
    records = _records(payload)
    assert sorted(records) == list(CASE_IDS)
    for case_id in CASE_IDS:
        expected = _expected(dataset["arrays"][case_id])
        assert records[case_id]["error"] is None
        for key, value in expected.items():
            assert records[case_id][key] == pytest.approx(value, abs=1e-9)
        png = root / "pictures" / f"{case_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    maes = [records[c]["mae"] for c in CASE_IDS]
    assert payload["aggregates"]["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert payload["aggregates"]["ssim"]["count"] == 3
    report = (root / "pictures" / "report.md").read_text(encoding="utf-8")
    assert "| 1PA002 |" in report and "(1PA002.png)" in report and "SSIM" in report


def test_local_cli_flat_layout_synthrad2025(dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    out = root / "metrics2025.json"
    code = synthct_main(
        ["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out),
         "--variant", "synthrad2025", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    payload = _strict_json(out)
    assert payload["variant"] == "synthrad2025"
    assert set(payload["aggregates"]) == {"mae", "psnr", "ms_ssim"}
    record = _records(payload)["1PA001"]
    assert record["ms_ssim"] == pytest.approx(_expected(dataset["arrays"]["1PA001"], "synthrad2025")["ms_ssim"])


def test_identical_prediction_gives_capped_psnr_in_strict_json(dataset: dict[str, Any], write_image) -> None:
    root = dataset["root"]
    ct, _, _ = dataset["arrays"]["1PA001"]
    write_image(ct, root / "pred" / "1PA001.mha")
    out = root / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--out", str(out)]) == 0
    record = _records(_strict_json(out))["1PA001"]
    assert record["psnr"] == metrics.PSNR_CAP_DB and record["mae"] == 0.0 and record["ssim"] == pytest.approx(1.0)


def test_bad_inputs_get_error_records_and_others_are_still_scored(dataset: dict[str, Any], write_image) -> None:
    root = dataset["root"]
    pred = root / "pred"
    ct, sct, mask = dataset["arrays"]["1PA001"]
    extra = {
        "1PA004": "unreadable",
        "1PA005": "size",
        "1PA006": "empty-mask",
        "1PA007": "nan",
        "1PA008": "2d",
        "1PA009": "missing",
        "1PA010": "origin",
    }
    for case_id, problem in extra.items():
        write_image(ct, root / "gt" / "ct" / f"{case_id}.mha")
        write_image(np.zeros_like(mask) if problem == "empty-mask" else mask, root / "gt" / "mask" / f"{case_id}.mha")
        target = pred / f"{case_id}.mha"
        if problem == "unreadable":
            target.write_bytes(b"this is not an image")
        elif problem == "size":
            write_image(sct[:, :-2], target)
        elif problem == "nan":
            broken = sct.astype(np.float32)
            broken[5, 9, 9] = np.nan
            write_image(broken, target)
        elif problem == "2d":
            write_image(sct[5], target)
        elif problem == "origin":
            write_image(sct, target, origin_mm=(0.0, 0.0, 7.5))
        elif problem != "missing":
            write_image(sct, target)
    write_image(sct, pred / "9ZZ999.mha")  # a prediction with no ground truth
    out = root / "metrics.json"
    args = ["evaluate", "--pred", str(pred), "--gt", str(root / "gt"), "--out", str(out), "--no-progress"]
    assert synthct_main(args) == 1
    records = _records(_strict_json(out))
    for case_id in CASE_IDS:  # the good cases are still scored
        assert records[case_id]["error"] is None and records[case_id]["mae"] is not None
    expectations = {
        "1PA004": (pred / "1PA004.mha", "cannot be read"),
        "1PA005": (pred / "1PA005.mha", "size"),
        "1PA006": (root / "gt" / "mask" / "1PA006.mha", "mask is empty"),
        "1PA007": (pred / "1PA007.mha", "1 voxel(s) are NaN"),
        "1PA008": (pred / "1PA008.mha", "3-D"),
        "1PA009": (pred, "no prediction for case 1PA009"),
        "1PA010": (pred / "1PA010.mha", "origin"),
        "9ZZ999": (pred / "9ZZ999.mha", "no ground-truth case 9ZZ999"),
    }
    for case_id, (path, problem) in expectations.items():
        error = records[case_id]["error"]
        assert error and str(path) in error and problem in error, (case_id, error)
        assert records[case_id]["mae"] is None
    payload = _strict_json(out)
    assert payload["aggregates"]["mae"]["count"] == 3
    assert payload["cases"] == {"scored": 3, "failed": len(expectations)}

    # geometry check can be relaxed (size must still match)
    relaxed = root / "relaxed.json"
    assert synthct_main([*args[:-3], "--out", str(relaxed), "--ignore-geometry", "--only-predicted"]) == 1
    records = _records(_strict_json(relaxed))
    assert records["1PA010"]["error"] is None
    assert "1PA009" not in records and "size" in records["1PA005"]["error"]


def test_local_cli_without_ground_truth_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "nothing"), "--out", str(out)]
    assert synthct_main(args) == 2
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ container mode


def _gc_job(pk: str, mr_name: str, sct_name: str | None = None) -> dict[str, Any]:
    """A grand-challenge algorithm job as listed in predictions.json."""
    return {
        "pk": pk,
        "inputs": [
            {"image": {"name": mr_name}, "interface": {"slug": "mri-image", "relative_path": "images/mri"}},
            {"image": {"name": f"mask_{mr_name}"}, "interface": {"slug": "body", "relative_path": "images/body"}},
        ],
        "outputs": [
            {
                "image": {"name": sct_name or f"{uuid.uuid4()}.mha"},
                "interface": {"slug": "synthetic-ct-image", "relative_path": "images/synthetic-ct"},
            }
        ],
        "status": "Succeeded",
    }


def _run_container(root: Path, **env: str) -> tuple[int, dict[str, Any]]:
    environment = {
        **os.environ,
        "SYNTHCT_INPUT": str(root / "input"),
        "SYNTHCT_OUTPUT": str(root / "output"),
        "SYNTHCT_GROUND_TRUTH": str(root / "gt"),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "synthct.evaluation"],
        env=environment, capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S,
    )
    metrics_path = root / "output" / "metrics.json"
    assert metrics_path.exists(), done.stderr
    return done.returncode, _strict_json(metrics_path)


def test_container_mode_scores_grand_challenge_jobs(dataset: dict[str, Any], write_image) -> None:
    root = dataset["root"]
    jobs = []
    for index, case_id in enumerate(CASE_IDS):
        pk = str(uuid.uuid4())
        # the MR input name holds the case id in various ways; the output file is named by the platform
        mr_name = [f"{case_id}.mha", f"mri_{case_id}.mha", f"{case_id}.nii.gz"][index]
        job = _gc_job(pk, mr_name)
        jobs.append(job)
        write_image(dataset["arrays"][case_id][1], root / "input" / pk / "output" / "images" / "synthetic-ct" /
                    job["outputs"][0]["image"]["name"])  # fmt: skip
    (root / "input" / "predictions.json").write_text(json.dumps(jobs), encoding="utf-8")
    code, payload = _run_container(root)
    assert code == 0
    records = _records(payload)
    assert sorted(records) == list(CASE_IDS)
    for job, case_id in zip(jobs, CASE_IDS, strict=True):
        assert records[case_id]["pk"] == job["pk"]
        assert records[case_id]["ssim"] == pytest.approx(_expected(dataset["arrays"][case_id])["ssim"], abs=1e-9)
    assert set(payload["aggregates"]["psnr"]) == {"mean", "std", "min", "max", "25pc", "50pc", "75pc", "count"}
    assert payload["aggregates"]["psnr"]["count"] == 3

    code, payload = _run_container(root, SYNTHCT_METRICS_VARIANT="synthrad2025")
    assert code == 0 and payload["aggregates"]["ms_ssim"]["count"] == 3


def test_container_mode_reports_missing_outputs_and_uncovered_cases(dataset: dict[str, Any], write_image) -> None:
    root = dataset["root"]
    good = _gc_job("job-good", "1PA001.mha")
    write_image(dataset["arrays"]["1PA001"][1], root / "input" / "job-good" / "output" / "images" / "synthetic-ct" /
                "out.mha")  # fmt: skip
    empty = _gc_job("job-empty", "1PA002.mha")  # the algorithm wrote nothing
    unknown = _gc_job("job-unknown", "2XY001.mha")
    (root / "input" / "predictions.json").write_text(json.dumps([good, empty, unknown]), encoding="utf-8")
    code, payload = _run_container(root)
    assert code == 1
    records = {(r["case_id"], r.get("pk")): r for r in payload["results"]}
    assert records[("1PA001", "job-good")]["error"] is None
    error = records[("1PA002", "job-empty")]["error"]
    assert "job-empty" in error and "synthetic-ct" in error and "no synthetic-CT image" in error
    assert "no ground-truth case 2XY001" in records[("2XY001", "job-unknown")]["error"]
    assert "no prediction for ground-truth case 1PA003" in records[("1PA003", None)]["error"]
    assert payload["aggregates"]["mae"]["count"] == 1


def test_container_mode_with_broken_job_list_still_writes_metrics(tmp_path: Path, dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    (root / "input").mkdir()
    (root / "input" / "predictions.json").write_text("{not json", encoding="utf-8")
    code, payload = _run_container(root)
    assert code == 1
    assert "predictions.json" in payload["error"] and payload["results"] == []
    assert payload["aggregates"]["mae"]["count"] == 0


def test_container_rejects_unsafe_pk(dataset: dict[str, Any]) -> None:
    ground_truth = find_ground_truth(dataset["root"] / "gt")
    jobs = build_jobs([_gc_job("../../etc", "1PA001.mha")], dataset["root"] / "input", ground_truth)
    assert "unsafe pk" in (jobs[0].problem or "")


# ------------------------------------------------------------------------------------------------ helpers


def test_resolve_case_id() -> None:
    known = {"1BA001", "1PA010"}
    assert resolve_case_id("1BA001.nii.gz", known) == "1BA001"
    assert resolve_case_id("mri_1PA010.mha", known) == "1PA010"
    assert resolve_case_id("sct-1ba001.mha", known) == "1BA001"
    assert resolve_case_id("other.mha", known) == "other"


def test_ground_truth_incomplete_case_is_kept_with_a_problem(tmp_path: Path, write_image) -> None:
    volume = np.zeros((8, 8, 8), np.int16)
    write_image(volume, tmp_path / "ct" / "1BA001.mha")
    write_image(volume, tmp_path / "ct" / "1BA002.mha")
    write_image(volume.astype(np.uint8), tmp_path / "mask" / "1BA001.mha")
    cases = find_ground_truth(tmp_path)
    assert cases["1BA001"].problem is None
    assert "no mask file for case 1BA002" in (cases["1BA002"].problem or "")


def test_report_lists_errors_and_escapes_tables() -> None:
    results = [
        {"case_id": "A", "mae": 10.0, "psnr": 30.0, "ssim": 0.9, "error": None},
        {"case_id": "B", "mae": None, "psnr": None, "ssim": None, "error": "x.mha: bad | broken"},
    ]
    text = render_report(build_payload(results, "synthrad2023"), {"A": "A.png"})
    assert "| A | 10.00 | 30.00 | 0.9000 | [png](A.png) | ok |" in text
    assert "x.mha: bad \\| broken" in text and "![A](A.png)" in text


def test_evaluation_imports_no_heavy_frameworks() -> None:
    """The evaluation container ships without torch/monai/onnxruntime: importing the stage must not need them."""
    code = (
        "import sys, synthct.evaluation.container, synthct.evaluation.cli, synthct.evaluation.local, synthct.metrics\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'onnxruntime', 'onnx', 'synthct.train', 'synthct.export',"
        " 'synthct.algorithm', 'skimage')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=120, check=True
    )
    assert done.stdout.strip() == ""
