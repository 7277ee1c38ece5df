"""``synthct submission-check IMAGE``: what grand-challenge checks in an algorithm image, and its runtime's limits.

    synthct submission-check synthct-algorithm:cpu --model-tarball model.tar.gz [--memory 8g] [--time-limit-s 1200]
                             [--gpu no|yes] [--regions brain,th]

Checks (SPEC §13), each printed as PASS / FAIL / SKIP / WARN with its numbers:

- platform ``linux/amd64`` and a non-root ``USER`` (``docker image inspect``; a user name is resolved with ``id -u``
  inside the image);
- compressed image size ≤ 10 GB: ``docker save IMAGE`` gzip-compressed at level 1 (as ``| gzip -1 | wc -c``),
  streamed and counted, never written to disk;
- the model tarball (``--model-tarball``): its layout and every file's sha256 (:mod:`synthct.algorithm.model_archive`);
- one grand-challenge job per region — the tarball's packages, else the image's baked ones, or ``--regions`` —
  on a phantom (:func:`synthct.phantom.generate.generate_case`, size ``small``; a region without a phantom in this
  synthct is skipped with a note) under the runtime's flags: ``--network none``, ``--memory`` (= swap) as given,
  ``--cap-drop ALL``, ``no-new-privileges``, 256 pids, ``/input`` read-only with SynthRAD 2025's interface paths
  (``/input/images/mri/<uuid>.mha``, ``/input/images/body/<uuid>.mha``, ``/input/region.json``), an empty tmpfs
  ``/tmp``, the tarball extracted read-only at ``/opt/ml/model``, ``--gpus 1`` with ``--gpu yes``. Per job: exit
  status, wall seconds (from ``docker start`` to exit), peak memory (the container's cgroup high-water mark,
  ``memory.max_usage_in_bytes`` (v1) or ``memory.peak`` (v2), sampled every 0.2 s while it runs; ``docker stats``
  where the cgroup is not readable), an sCT per input (int16, the MR's size), results.json without errors.

Exit status 0 when every check passed (skips and warnings allowed), 1 when one failed (the reasons are printed),
2 when nothing could be checked (no Docker, image not present locally: the check never pulls). No torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REGION_NAMES = {"brain": "Brain", "pelvis": "Pelvis", "hn": "Head and Neck", "th": "Thorax", "ab": "Abdomen"}
"""region.json's value per region (SynthRAD 2023 / 2025 names)."""
MAX_COMPRESSED_BYTES = 10 * 1000**3
"""Grand-challenge's image size limit, 10 GB (decimal: the stricter reading)."""
GIB = 1024**3
PHASE_MEMORY_RANGE = (4 * GIB, 32 * GIB)
RESERVED_MEMORY = GIB
"""Grand-challenge reserves 1 GB of a phase's memory: a peak closer than this to the limit is a warning."""
SAMPLE_S = 0.2
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": GIB, "t": 1024**4}


class CheckError(RuntimeError):
    """Nothing can be checked (no Docker, no such image, bad arguments); exit status 2."""


@dataclass
class Check:
    """One printed check."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"  {self.status:<4}  {self.name:<14} {self.detail}"


@dataclass
class JobResult:
    """One job run under the runtime's flags."""

    region: str
    exit_code: int | None = None
    seconds: float = 0.0
    peak_bytes: int | None = None
    peak_method: str = ""
    oom_killed: bool = False
    timed_out: bool = False
    problems: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)


def parse_memory(text: str) -> int:
    """Docker's memory notation (binary units) → bytes: ``8g`` → 8 GiB, ``200m``, ``512MiB``, ``1073741824``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise CheckError(f"--memory {text!r}: expected e.g. 8g, 200m or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(size: int | None) -> str:
    """Bytes in binary units (as Docker's limits): ``"312 MiB"``, ``"8.0 GiB"``."""
    if size is None:
        return "not measured"
    if size < GIB:
        return f"{size / 1024**2:.0f} MiB"
    return f"{size / GIB:.1f} GiB"


def user_problem(user: str) -> str | None:
    """Why an image's ``Config.User`` runs as root (``""``, ``root``, ``0``, ``0:0``, ``root:…``), or None."""
    name = user.strip().split(":", 1)[0]
    if not name:
        return "no USER in the image: it runs as root"
    if name in ("root", "0"):
        return f"USER {user} is root"
    return None


def docker(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` with text output; ``check``: a non-zero exit raises :class:`CheckError` with its stderr."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise CheckError("no `docker` command on PATH") from exc
    if check and done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise CheckError(f"docker {args[0]} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done


def inspect_image(image: str) -> dict[str, Any]:
    """``docker image inspect`` of a local image; :class:`CheckError` if Docker or the image is missing."""
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=60)
    if info.returncode != 0:
        lines = info.stderr.strip().splitlines() or [f"docker info: exit {info.returncode}"]
        raise CheckError(f"no Docker daemon reachable ({lines[-1]})")
    done = docker("image", "inspect", image, timeout=60)
    if done.returncode != 0:
        raise CheckError(f"image {image!r} not found locally (submission-check never pulls: build or load it first)")
    return json.loads(done.stdout)[0]


def check_platform(info: dict[str, Any]) -> Check:
    platform = f"{info.get('Os')}/{info.get('Architecture')}"
    if platform == "linux/amd64":
        return Check("platform", "PASS", platform)
    return Check("platform", "FAIL", f"{platform}: grand-challenge runs linux/amd64 images only (docker build "
                                     "--platform linux/amd64)")


def check_user(image: str, info: dict[str, Any]) -> Check:
    user = str((info.get("Config") or {}).get("User") or "")
    problem = user_problem(user)
    if problem:
        return Check("user", "FAIL", f"{problem}; grand-challenge refuses images that run as root (add USER with "
                                     "a non-root uid to the Dockerfile)")
    name = user.split(":", 1)[0]
    if name.isdigit():
        return Check("user", "PASS", f"{user} (non-root)")
    done = docker("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "id", image, "-u",
                  timeout=120)
    uid = done.stdout.strip()
    if done.returncode != 0 or not uid.isdigit():
        return Check("user", "WARN", f"{user}: not root by name; its uid could not be resolved (`id -u` in the "
                                     "image failed)")
    if uid == "0":
        return Check("user", "FAIL", f"USER {user} has uid 0 (root); grand-challenge refuses images that run as root")
    return Check("user", "PASS", f"{user} = uid {uid} (non-root)")


def compressed_size(image: str) -> int:
    """Bytes of ``docker save IMAGE | gzip -1``, streamed (nothing written to disk)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: the gzip format, as gzip -1
    size = 0
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as save:
        assert save.stdout is not None
        while chunk := save.stdout.read(1 << 20):
            size += len(compressor.compress(chunk))
        error = save.stderr.read().decode("utf-8", "replace") if save.stderr else ""
    if save.returncode != 0:
        raise CheckError(f"docker save {image} failed: {error.strip()}")
    return size + len(compressor.flush())


def check_size(image: str) -> Check:
    started = time.perf_counter()
    size = compressed_size(image)
    detail = (f"{size / 1000**3:.2f} GB compressed ({size} bytes, docker save | gzip -1, "
              f"{time.perf_counter() - started:.0f} s); limit 10 GB")
    return Check("image size", "PASS" if size <= MAX_COMPRESSED_BYTES else "FAIL", detail)


def check_model_tarball(tarball: Path, dest: Path) -> tuple[Check, dict[str, Path]]:
    """Extract and verify the tarball into ``dest`` (as the platform does into /opt/ml/model)."""
    from synthct.algorithm.model_archive import ArchiveError, extract_tarball, human_size

    from synthct.model_package import sha256_of

    try:
        packages = extract_tarball(tarball, dest)
    except ArchiveError as exc:
        return Check("model tarball", "FAIL", str(exc)), {}
    size = tarball.stat().st_size
    return Check("model tarball", "PASS", f"{tarball}: {human_size(size)}, sha256 {sha256_of(tarball)[:16]}…, "
                                          f"package(s) {', '.join(sorted(packages))}"), packages


def baked_regions(image: str) -> list[str]:
    """Regions of the packages baked into a synthct algorithm image (``$SYNTHCT_MODELS``)."""
    code = ("import json, os; from pathlib import Path; from synthct.algorithm.cases import find_model_packages; "
            "print(json.dumps(sorted(find_model_packages(Path(os.environ.get('SYNTHCT_MODELS', '/opt/app/models'))))))")
    done = docker("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "python", image, "-c", code,
                  timeout=300)
    if done.returncode != 0:
        raise CheckError(f"could not list the packages baked into {image} (give --regions or --model-tarball): "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _open_up(folder: Path, folder_mode: int) -> None:
    """Make a folder readable (files 0644) for the image's user, whatever its uid; folders get ``folder_mode``."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(folder_mode if path.is_dir() else 0o644)


def write_job_input(region: str, folder: Path) -> tuple[str, Any]:
    """A phantom case as a SynthRAD 2025 job input (uuid file names); (MR file name, MR image). Raises if this
    synthct has no phantom for the region."""
    import SimpleITK as sitk

    from synthct.phantom.generate import generate_case

    mr, _, mask = generate_case(region, 0, "small")
    mr_name = f"{uuid.uuid4()}.mha"
    for sub, image, name in (("mri", mr, mr_name), ("body", mask, f"{uuid.uuid4()}.mha")):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / name), True)
    (folder / "region.json").write_text(json.dumps(REGION_NAMES[region]), encoding="utf-8")
    _open_up(folder, 0o755)
    return mr_name, mr


def _cgroup_peak_file(pid: int) -> Path | None:
    """The container's cgroup high-water-mark file, seen from here (v1 memory.max_usage_in_bytes, v2 memory.peak)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.max_usage_in_bytes"
            if candidate.is_file():
                return candidate
    for line in lines:
        if line.startswith("0::"):
            candidate = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.peak"
            if candidate.is_file():
                return candidate
    return None


def _stats_bytes(name: str) -> int | None:
    """Current memory use by ``docker stats --no-stream`` (the fallback sampler)."""
    done = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name, timeout=30)
    match = re.match(r"\s*([\d.]+)\s*([KMGT]?)i?B", done.stdout)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if done.returncode == 0 and match else None


def run_job(image: str, region: str, work: Path, job_input: tuple[str, Any], model_dir: Path | None, memory: int,
            time_limit_s: float, gpu: bool) -> JobResult:
    """One grand-challenge job on ``work/input`` (:func:`write_job_input`: MR file name, MR image) under the
    runtime's flags; see the module docstring."""
    import SimpleITK as sitk

    result = JobResult(region)
    input_dir, output_dir = work / "input", work / "output"
    mr_name, mr = job_input
    output_dir.mkdir(parents=True)
    output_dir.chmod(0o777)
    name = f"synthct-gc-check-{uuid.uuid4().hex[:12]}"
    command = ["create", "--pull", "never", "--name", name, "--network", "none", "--memory", str(memory),
               "--memory-swap", str(memory), "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--pids-limit", "256", "--shm-size", "128m", "--tmpfs", "/tmp:rw,nosuid,nodev,exec,mode=1777",
               "-v", f"{input_dir}:/input:ro", "-v", f"{output_dir}:/output"]
    if model_dir is not None:
        command += ["-v", f"{model_dir}:/opt/ml/model:ro"]
    if gpu:
        command += ["--gpus", "1"]
    created = docker(*command, image, timeout=120)
    if created.returncode != 0:
        result.problems.append(f"docker create failed: {(created.stderr.strip().splitlines() or ['?'])[-1]}")
        return result
    try:
        _run_and_sample(name, result, time_limit_s)
        state = json.loads(docker("inspect", name, timeout=60, check=True).stdout)[0]["State"]
        result.exit_code, result.oom_killed = int(state["ExitCode"]), bool(state.get("OOMKilled"))
        logs = docker("logs", name, timeout=60)
        lines = [line.strip() for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
        result.log_tail = [line if len(line) <= 160 else line[:157] + "..." for line in lines[-8:]]
    finally:
        docker("rm", "-f", name, timeout=120)
    _judge_outputs(result, output_dir, mr_name, mr, sitk)
    return result


def _run_and_sample(name: str, result: JobResult, time_limit_s: float) -> None:
    """Start the container, sample its memory high-water mark until it exits (killed past the time limit)."""
    started = time.monotonic()
    docker("start", name, timeout=120, check=True)
    waiter = subprocess.Popen(["docker", "wait", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = docker("inspect", "--format", "{{.State.Pid}}", name, timeout=60).stdout.strip()
    peak_file = _cgroup_peak_file(int(pid)) if pid.isdigit() and int(pid) > 0 else None
    result.peak_method = f"cgroup {peak_file.name}" if peak_file else "docker stats samples"
    try:
        while waiter.poll() is None:
            if time.monotonic() - started > time_limit_s and not result.timed_out:
                result.timed_out = True
                docker("kill", name, timeout=60)
            try:
                sample = int(peak_file.read_text()) if peak_file else _stats_bytes(name)
            except (OSError, ValueError):  # the cgroup goes away when the container exits
                sample = None
            if sample is not None:
                result.peak_bytes = max(result.peak_bytes or 0, sample)
            time.sleep(SAMPLE_S)
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.wait()
    result.seconds = time.monotonic() - started


def _judge_outputs(result: JobResult, output_dir: Path, mr_name: str, mr: Any, sitk: Any) -> None:
    """results.json without errors and the sCT (int16, the MR's size) named like the MR."""
    results_path = output_dir / "results.json"
    try:
        entries = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        result.problems.append(f"/output/results.json not readable ({exc.__class__.__name__})")
        entries = []
    errors = [m for e in entries if isinstance(e, dict) for m in e.get("error_messages") or []]
    if errors:
        result.problems.append(f"results.json errors: {'; '.join(errors)}")
    sct_path = output_dir / "images" / "synthetic-ct" / mr_name
    if not sct_path.is_file():
        result.problems.append(f"no /output/images/synthetic-ct/{mr_name}")
        return
    sct = sitk.ReadImage(str(sct_path))
    if sct.GetPixelID() != sitk.sitkInt16 or sct.GetSize() != mr.GetSize():
        result.problems.append(f"sCT is {sct.GetPixelIDTypeAsString()} {sct.GetSize()}, expected 16-bit signed "
                               f"integer {mr.GetSize()}")


def judge_job(job: JobResult, memory: int, time_limit_s: float) -> Check:
    """The job's printed line: exit status, seconds, peak memory against the limits; FAIL with the reasons."""
    reasons = list(job.problems)
    if job.exit_code is not None and job.exit_code != 0:
        why = ""
        if job.oom_killed or job.exit_code == 137:
            why = f" (OOM-killed: the job needs more than --memory {format_bytes(memory)})"
        if job.timed_out:
            why = f" (killed at the {time_limit_s:g} s time limit)"
        reasons.insert(0, f"exit status {job.exit_code}{why}")
    elif job.timed_out:
        reasons.insert(0, f"ran past the {time_limit_s:g} s time limit")
    if job.oom_killed and job.exit_code == 0:
        reasons.append("a process was OOM-killed")
    peak = format_bytes(job.peak_bytes)
    detail = (f"exit {job.exit_code}, {job.seconds:.1f} s (limit {time_limit_s:g} s), peak memory {peak} "
              f"(limit {format_bytes(memory)}; {job.peak_method})")
    if reasons:
        tail = " | ".join(job.log_tail[-3:])
        return Check(f"job {job.region}", "FAIL", f"{detail}: {'; '.join(reasons)}" + (f" [log: {tail}]" if tail
                                                                                        else ""))
    if job.peak_bytes is not None and job.peak_bytes > memory - RESERVED_MEMORY:
        return Check(f"job {job.region}", "WARN", f"{detail}: within 1 GB of the limit (grand-challenge reserves "
                                                  "1 GB of the phase's memory)")
    return Check(f"job {job.region}", "PASS", detail)


def _remove_tree(path: Path, image: str) -> None:
    """Remove a job's folders; files the image's (non-root) user wrote are removed by that user in a container."""
    try:
        shutil.rmtree(path)
    except PermissionError:
        docker("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "find", "-v", f"{path}:/work",
               image, "/work", "-mindepth", "1", "-delete", timeout=300)
        shutil.rmtree(path, ignore_errors=True)


def submission_check(image: str, tarball: Path | None, memory_text: str, time_limit_s: float, gpu: bool,
                     regions: list[str] | None) -> list[Check]:
    """Run every check, printing each line as it completes; returns the checks."""
    from synthct.algorithm.cases import canonical_region

    memory = parse_memory(memory_text)
    if time_limit_s <= 0:
        raise CheckError(f"--time-limit-s {time_limit_s:g}: must be positive")
    wanted = [canonical_region(name) for name in regions] if regions else None
    info = inspect_image(image)
    print(f"synthct submission-check {image}: phase memory {format_bytes(memory)}, time limit {time_limit_s:g} s "
          f"per job, GPU {'yes (T4, 16 GB)' if gpu else 'no'}; model "
          f"{tarball if tarball else 'baked into the image'}", flush=True)
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        print(check.line(), flush=True)

    if not PHASE_MEMORY_RANGE[0] <= memory <= PHASE_MEMORY_RANGE[1]:
        report(Check("memory", "WARN", f"--memory {format_bytes(memory)} is outside grand-challenge's 4–32 GB"))
    report(check_platform(info))
    report(check_user(image, info))
    report(check_size(image))
    with tempfile.TemporaryDirectory(prefix="synthct-submission-check-") as scratch_name:
        scratch = Path(scratch_name)
        model_dir: Path | None = None
        if tarball is not None:
            model_dir = scratch / "model"
            model_dir.mkdir()
            check, packages = check_model_tarball(tarball, model_dir)
            report(check)
            if not packages:
                return checks
            _open_up(model_dir, 0o755)
            found = sorted(packages)
        else:
            found = baked_regions(image)
            if not found and not wanted:
                report(Check("models", "FAIL", f"{image} has no baked model package and no --model-tarball was "
                                               "given: a job would have no model"))
                return checks
        for region in wanted or found:
            work = scratch / f"job-{region}"
            try:
                job_input = write_job_input(region, work / "input")
            except Exception as exc:  # no phantom for this region in this synthct (or it cannot make one)
                report(Check(f"job {region}", "SKIP", f"no {region} phantom in this synthct "
                                                      f"({exc.__class__.__name__}: {exc}); not run"))
                continue
            job = run_job(image, region, work, job_input, model_dir, memory, time_limit_s, gpu)
            report(judge_job(job, memory, time_limit_s))
            _remove_tree(work, image)
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="the algorithm image (present locally; never pulled)")
    parser.add_argument("--model-tarball", type=Path, default=None, metavar="T",
                        help="the algorithm model (synthct package's model.tar.gz), extracted read-only at "
                             "/opt/ml/model; default: the image's baked packages")
    parser.add_argument("--memory", default="8g", help="the phase's memory limit (4g–32g on grand-challenge; "
                                                       "default 8g)")
    parser.add_argument("--time-limit-s", type=float, default=1200.0,
                        help="the phase's time limit per job in seconds (default 1200 = grand-challenge's 20 min)")
    parser.add_argument("--gpu", choices=("no", "yes"), default="no",
                        help="run the jobs with a GPU (--gpus 1; grand-challenge: a T4) or without (default)")
    parser.add_argument("--regions", default=None,
                        help="comma-separated regions to run a job for (brain, pelvis, hn, th, ab or their "
                             "region.json names); default: the regions of the model packages")


def run(args: argparse.Namespace) -> int:
    from synthct.algorithm.cases import RegionError

    regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
    try:
        checks = submission_check(args.image, args.model_tarball, args.memory, args.time_limit_s, args.gpu == "yes",
                                  regions)
    except (CheckError, RegionError) as exc:
        log.error("%s", exc)
        return 2
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        print(f"submission-check FAILED: {len(failed)} of {len(checks)} check(s) failed:")
        for check in failed:
            print(f"  - {check.name}: {check.detail}")
        return 1
    skipped = sum(c.status == "SKIP" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    print(f"submission-check passed: {len(checks) - skipped - warned} check(s) passed"
          + (f", {warned} warning(s)" if warned else "") + (f", {skipped} skipped" if skipped else ""))
    return 0
