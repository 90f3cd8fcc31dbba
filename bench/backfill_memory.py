"""Backfill memory: does a full backfill stream its leads, or hold them?

Run from the repository root: `.venv/bin/python -m bench.backfill_memory [--sizes 100000 1000000]
[--source salesforce]`. For each size it
1. starts the sandbox CRMs (`python -m sandbox serve`) in their own process, seeded with that
   many leads per CRM, data dir and info file in a temporary folder (their memory is not counted);
2. runs `backfill_leads(source=...)` with no `start` (every lead, through `read_all()`: Bulk API
   2.0 for Salesforce above its threshold) as a real Prefect flow run, in another child process,
   with a fresh temporary PREFECT_HOME and a fresh SQLite ledger;
3. reports leads read and written, wall seconds, leads/s, API calls (from the run's summary
   artifact) and the flow process's peak RSS.

Peak RSS is the flow process's own kernel high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`,
i.e. VmHWM, read by that process after the flow run ends): everything the flow does in that
process (reads, parsing, validation, scoring, the ledger, bulk writes, the thread pools, Prefect's
client and logging), and nothing else. The temporary Prefect API server the flow run starts
(no PREFECT_API_URL is set) is a uvicorn subprocess of the flow process: it is excluded from
that figure and reported separately, as are the psutil samples of the whole tree (this process
samples the flow process and its children every --sample-seconds).

Targets: peak RSS at 1,000,000 leads at or under 1 GiB, and within 20% of the peak at 100,000.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

TARGET_RSS_MIB = 1024
TARGET_RATIO = 1.2
MIB = 1024 * 1024
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
# Anything that would point the run at real CRMs, another Prefect API or another ledger.
CLEARED_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILES_PATH",
    "SALESFORCE_SESSION_ID",
    "SALESFORCE_USERNAME",
    "SALESFORCE_CONSUMER_KEY",
    "SALESFORCE_INSTANCE_URL",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_BASE_URL",
    "LEADSYNC_CA_BUNDLE",
)
RESULT_PREFIX = "BACKFILL_MEMORY_RESULT "
USAGE = re.compile(
    r"API calls used \| ([\d,]+) \(([\d,]+) reads, ([\d,]+) writes, ([\d,]+) metadata\)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--source", choices=["salesforce", "hubspot"], default="salesforce")
    parser.add_argument("--sample-seconds", type=float, default=0.2)
    parser.add_argument(
        "--sandbox-timeout", type=float, default=900, help="seconds to wait for the seeded sandbox"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=3600, help="seconds a backfill may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.source)

    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
    }
    print(
        f"machine: {machine['cpus']} CPUs, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}; source {args.source}"
    )
    runs = []
    for size in args.sizes:
        run = _measure(size, args)
        runs.append(run)
        _print_run(run)

    by_size = {run["leads"]: run for run in runs}
    small = by_size.get(100_000) or (runs[0] if len(runs) > 1 else None)
    big = by_size.get(1_000_000) or (runs[-1] if len(runs) > 1 else None)
    summary: dict = {"source": args.source, "machine": machine, "runs": runs}
    peak_1m = by_size[1_000_000]["peak_rss_mib"] if 1_000_000 in by_size else None
    ratio = (
        round(big["peak_rss_mib"] / small["peak_rss_mib"], 3)
        if big is not None and small is not None and big is not small
        else None
    )
    summary.update(
        peak_rss_1m_mib=peak_1m,
        ratio_1m_to_100k=ratio,
        ratio_sizes=[small["leads"], big["leads"]] if ratio is not None else None,
        target_rss_mib=TARGET_RSS_MIB,
        target_ratio=TARGET_RATIO,
        target_rss_ok=(peak_1m <= TARGET_RSS_MIB) if peak_1m is not None else None,
        target_ratio_ok=(ratio <= TARGET_RATIO) if ratio is not None else None,
        all_runs_completed=all(run["state"] == "COMPLETED" for run in runs),
    )
    print(
        f"peak RSS at 1M: {peak_1m} MiB (target <= {TARGET_RSS_MIB}: "
        f"{summary['target_rss_ok']}); 1M/100k ratio {ratio} (target <= {TARGET_RATIO}: "
        f"{summary['target_ratio_ok']})"
    )
    print(json.dumps(summary))


# --- the parent: one size ---------------------------------------------------------------------


def _measure(size: int, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"leadsync-backfill-memory-{size}-"))
    env = _environment(work)
    print(f"\n== {size:,} leads ({work}) ==", flush=True)
    sandbox = None
    try:
        started = time.perf_counter()
        sandbox, sandbox_log = _start_sandbox(size, work, env, args.sandbox_timeout)
        seed_s = time.perf_counter() - started
        sandbox_rss = psutil.Process(sandbox.pid).memory_info().rss
        print(
            f"sandbox up in {seed_s:.1f}s (pid {sandbox.pid}, {sandbox_rss / MIB:,.0f} MiB RSS, "
            "not counted)",
            flush=True,
        )
        run = _run_backfill(size, args, work, env, sandbox.pid)
        run["sandbox_start_s"] = round(seed_s, 1)
        run["sandbox_rss_mib_at_start"] = round(sandbox_rss / MIB, 1)
        return run
    finally:
        if sandbox is not None:
            _stop(sandbox)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(QUIET_ENV)
    env.update(
        PREFECT_HOME=str(work / "prefect"),
        LEADSYNC_SANDBOX_INFO=str(work / "info.json"),
        LEADSYNC_LEDGER_URL=f"sqlite:///{work / 'ledger.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_sandbox(
    size: int, work: Path, env: dict[str, str], timeout: float
) -> tuple[subprocess.Popen, Path]:
    log_path = work / "sandbox.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--leads",
            str(size),
            "--seed",
            "1",
            "--data-dir",
            str(work / "sandbox"),
            "--info-file",
            str(work / "info.json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the sandbox exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if "Serving until interrupted" in log_path.read_text():
            return process, log_path
        time.sleep(0.5)
    _stop(process)
    raise TimeoutError(f"the sandbox did not start within {timeout:.0f}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Sampler(threading.Thread):
    """RSS of the flow process, and of its children (the temporary Prefect API server), every
    `interval` seconds."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True, name="rss-sampler")
        self.process = psutil.Process(pid)
        self.interval = interval
        self.stop = threading.Event()
        self.timeline: list[tuple[float, int, int]] = []  # (seconds, flow rss, children rss)
        self.children: dict[int, str] = {}
        self.peak_children = 0
        self.peak_tree = 0

    def run(self) -> None:
        started = time.perf_counter()
        while not self.stop.is_set():
            try:
                own = self.process.memory_info().rss
                children = 0
                for child in self.process.children(recursive=True):
                    try:
                        children += child.memory_info().rss
                        if child.pid not in self.children:
                            self.children[child.pid] = " ".join(child.cmdline()[:6])
                    except psutil.Error:
                        continue
            except psutil.Error:
                return
            if own == 0:  # exited, not yet reaped
                return
            self.timeline.append((time.perf_counter() - started, own, children))
            self.peak_children = max(self.peak_children, children)
            self.peak_tree = max(self.peak_tree, own + children)
            self.stop.wait(self.interval)

    def peak_own(self) -> int:
        return max((own for _, own, _ in self.timeline), default=0)

    def profile(self, points: int = 10) -> list[tuple[float, float]]:
        """(seconds, MiB) of the flow process at `points` even steps of the run."""
        if not self.timeline:
            return []
        last = self.timeline[-1][0] or 1.0
        out, index = [], 0
        for step in range(1, points + 1):
            target = last * step / points
            while index < len(self.timeline) - 1 and self.timeline[index][0] < target:
                index += 1
            seconds, own, _ = self.timeline[index]
            out.append((round(seconds, 1), round(own / MIB, 1)))
        return out


def _run_backfill(
    size: int, args: argparse.Namespace, work: Path, env: dict[str, str], sandbox_pid: int
) -> dict:
    log_path = work / "flow.log"
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.backfill_memory", "--child", "--source", args.source],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
        )
        sampler = _Sampler(process.pid, args.sample_seconds)
        sampler.start()
        try:
            out, _ = process.communicate(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            raise TimeoutError(f"the backfill of {size:,} leads took over {args.run_timeout}s")
        finally:
            sampler.stop.set()
            sampler.join()
        process_s = time.perf_counter() - started
    lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"the backfill process exited with {process.returncode}:\n"
            f"{out[-2000:]}\n{log_path.read_text()[-4000:]}"
        )
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    server = [cmd for cmd in sampler.children.values()]
    return {
        "leads": size,
        **result,
        "leads_per_s": round(result["read"] / result["flow_s"]) if result["flow_s"] else None,
        "process_s": round(process_s, 1),
        "sampled_peak_flow_rss_mib": round(sampler.peak_own() / MIB, 1),
        "sampled_peak_server_rss_mib": round(sampler.peak_children / MIB, 1),
        "sampled_peak_tree_rss_mib": round(sampler.peak_tree / MIB, 1),
        "server_processes": server,
        "rss_profile_s_mib": sampler.profile(),
    }


def _print_run(run: dict) -> None:
    stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in run["stage_seconds"].items())
    calls = run.get("api_calls")
    print(
        f"state {run['state']}: read {run['read']:,}, written {run['written']:,} "
        f"(changed {run['changed']:,}, quarantined {run['quarantined']:,}, "
        f"failed {run['failed']:,}, rechecked chunks {run['rechecked']})"
    )
    print(
        f"flow run {run['flow_s']:.1f}s ({run['leads_per_s']:,} leads/s); flow process "
        f"{run['process_s']:.1f}s with start-up; sandbox start {run['sandbox_start_s']:.1f}s"
    )
    print(f"stage seconds (summed over chunks, they overlap): {stages}")
    if calls:
        print(
            f"API calls: {calls['calls']:,} ({calls['reads']:,} reads, {calls['writes']:,} "
            f"writes, {calls['metadata']:,} metadata)"
        )
    print(
        f"peak RSS of the flow process: {run['peak_rss_mib']:,.1f} MiB (kernel high-water mark; "
        f"{run['rss_before_flow_mib']:,.1f} MiB after imports, before the run; "
        f"psutil samples peak {run['sampled_peak_flow_rss_mib']:,.1f} MiB)"
    )
    print(
        f"temporary Prefect API server (excluded): peak {run['sampled_peak_server_rss_mib']:,.1f} "
        f"MiB; flow process + server sampled together: {run['sampled_peak_tree_rss_mib']:,.1f} MiB"
    )
    print(
        f"Arrow memory pool ({run['arrow_pool']}): peak {run['arrow_peak_allocated_mib']:,.1f} "
        f"MiB allocated, {run['arrow_allocated_at_end_mib']:,.1f} MiB at the end; flow process "
        f"RSS at the end {run['rss_at_end_mib']:,.1f} MiB"
    )
    profile = ", ".join(f"{s:.0f}s {mib:.0f}" for s, mib in run["rss_profile_s_mib"])
    print(f"flow process RSS over the run (s MiB): {profile}", flush=True)


# --- the child: one flow run ------------------------------------------------------------------


def _child(source: str) -> None:
    from prefect import get_client

    from flows.jobs import backfill_leads

    # Start the temporary API server first, so the timed run is the flow run alone.
    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    before = _max_rss()
    arrow = _ArrowWatch()
    arrow.start()
    started = time.perf_counter()
    state = backfill_leads(source=source, return_state=True)
    flow_s = time.perf_counter() - started
    peak = _max_rss()
    arrow.stop.set()
    arrow.join()
    report = state.result(raise_on_failure=False)
    result = {
        "state": state.type.value,
        "message": state.message,
        "flow_s": round(flow_s, 2),
        "peak_rss_mib": round(peak / MIB, 1),
        "rss_before_flow_mib": round(before / MIB, 1),
        "rss_at_end_mib": round(psutil.Process().memory_info().rss / MIB, 1),
        # pandas' string columns live in Arrow's memory pool, outside Python's allocator.
        "arrow_pool": arrow.backend,
        "arrow_peak_allocated_mib": round(arrow.peak / MIB, 1),
        "arrow_allocated_at_end_mib": round(arrow.allocated() / MIB, 1),
    }
    if hasattr(report, "read"):
        result.update(
            read=report.read,
            valid=report.valid,
            quarantined=report.quarantined,
            scored=report.scored,
            changed=report.changed,
            written=report.written,
            failed=report.failed,
            skipped=report.skipped,
            rechecked=report.rechecked,
            stage_seconds={stage: round(s, 2) for stage, s in report.seconds.items()},
        )
    else:
        result["error"] = repr(report)[:2000]
    result["api_calls"] = _api_calls(source, state)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


class _ArrowWatch(threading.Thread):
    """Peak bytes allocated in Arrow's default memory pool, sampled every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="arrow-watch")
        import pyarrow

        self.pool = pyarrow.default_memory_pool()
        self.backend = self.pool.backend_name
        self.stop = threading.Event()
        self.peak = 0

    def allocated(self) -> int:
        return self.pool.bytes_allocated()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, self.allocated())


def _max_rss() -> int:
    """This process's peak RSS in bytes (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _api_calls(source: str, state) -> dict | None:
    """Calls the connector made, from the run's summary artifact."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    try:
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[f"{source}-backfill-summary"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )
    except Exception as error:  # noqa: BLE001 - a figure missing, not a failed bench
        print(f"could not read the summary artifact: {error!r}", file=sys.stderr)
        return None
    for artifact in artifacts:
        match = USAGE.search(str(artifact.data))
        if match:
            calls, reads, writes, metadata = (int(g.replace(",", "")) for g in match.groups())
            return {"calls": calls, "reads": reads, "writes": writes, "metadata": metadata}
    return None


if __name__ == "__main__":
    main()
