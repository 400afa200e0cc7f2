"""Crash soak: kill `nomaly` with SIGKILL at many random instants, resume each time, and check the
output is byte-identical to an uninterrupted run (release build). Not part of CI; the CI test
`recovery::killed_runs_resume_to_byte_identical_output` is the same check at a small scale.

    cargo build --release -p nomaly-cli
    python3 benchmarks/crash_soak.py [--kills 25] [--rows 2000000] [--chunk-rows 20000] [--seed 7]
        [--faults read=0.05,write=0.05]   # also inject transient I/O failures on every attempt

It prints, per kill, the instant and what the manifest held, then: kills that landed mid-run,
chunks redone per resume (must be <= cpus), time from each `resume` to its first new commit
(must be < 5 s), and whether every part file, the row count and the ids match the reference.
Exit code 0 only when every check holds.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nomaly-target"))
NOMALY = os.path.join(TARGET, "release", "nomaly")
CPUS = 2


def sh(args, env=None, check=True):
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def job(dir, rows, chunk_rows):
    os.makedirs(dir, exist_ok=True)
    inp = os.path.join(dir, "tx.parquet")
    sh([NOMALY, "sql", "-e",
        f"COPY (SELECT value AS id, 100.0 + ((value * 7919) % 1000) / 50.0 AS amount, "
        f"CAST((value * 104729) % 977 AS DOUBLE) AS latency_ms, "
        f"CAST((value * 31) % 101 AS DOUBLE) AS items FROM generate_series(0, {rows - 1})) "
        f"TO '{inp}' STORED AS PARQUET OPTIONS ('format.max_row_group_size' '{chunk_rows}')"])
    p = os.path.join(dir, "p.toml")
    with open(p, "w") as f:
        f.write(f'input = "tx.parquet"\noutput = "out/scored/"\n[detect]\nalgorithm = "iforest"\n'
                f'columns = ["amount", "latency_ms", "items"]\n[run]\nchunk_rows = {chunk_rows}\n'
                f'[resources]\ncpus = {CPUS}\n[retry]\ninitial_delay = "5ms"\nmax_delay = "100ms"\n'
                f'max_retries = 10\n')
    return p


def parts(dir):
    out = {}
    for root, _, files in os.walk(dir):
        for n in files:
            if n.startswith("part-"):
                with open(os.path.join(root, n), "rb") as f:
                    out[os.path.relpath(os.path.join(root, n), dir)] = f.read()
    return out


def manifest(run_dir):
    with open(os.path.join(run_dir, "manifest.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--chunk-rows", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--faults", default="")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    if not os.path.exists(NOMALY):
        raise SystemExit(f"{NOMALY} not found; run: cargo build --release -p nomaly-cli")
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="nomaly-soak-")
    ok = True
    try:
        ref = job(os.path.join(tmp, "ref"), a.rows, a.chunk_rows)
        t = time.perf_counter()
        sh([NOMALY, "run", ref, "--no-progress"])
        full = time.perf_counter() - t
        expected = parts(os.path.join(tmp, "ref", "out", "scored"))
        print(f"reference: {len(expected)} part files in {full:.1f}s")

        dir = os.path.join(tmp, "crash")
        p = job(dir, a.rows, a.chunk_rows)
        env = dict(os.environ)
        if a.faults:
            env["NOMALY_FAULTS"] = a.faults
        staging_run = os.path.join(dir, "out", ".scored.nomaly-staging", "_nomaly")
        landed, redone, first_commit = 0, [], []
        # Each attempt may progress for at most this long, so the job outlives the kills.
        window = max(0.2, full / (a.kills + 4))
        for k in range(a.kills):
            started_ms = time.time() * 1000
            child = subprocess.Popen([NOMALY, "resume", p, "--no-progress"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if k > 0:
                deadline = time.time() + 120
                while not os.path.exists(os.path.join(staging_run, "run.json")) \
                        and child.poll() is None and time.time() < deadline:
                    time.sleep(0.005)
            delay = rng.uniform(0.05, window)
            time.sleep(delay)
            running = child.poll() is None
            child.kill()
            child.wait()
            landed += running
            events = manifest(staging_run) if os.path.exists(os.path.join(staging_run, "manifest.jsonl")) else []
            commits = sum(1 for e in events if e["event"] == "commit")
            resumes = [i for i, e in enumerate(events) if e["event"] == "resume"]
            if resumes:
                last = events[resumes[-1]]
                if last["at_unix_ms"] >= started_ms:
                    redone.append(len(last["redone"]))
                    after = [e for e in events[resumes[-1]:] if e["event"] == "commit"]
                    if after:
                        first_commit.append((after[0]["committed_at_unix_ms"] - started_ms) / 1000)
            print(f"kill {k:2d} after {delay:5.2f}s ({'mid-run' if running else 'already exited'}): "
                  f"{commits} chunks committed")
        t = time.perf_counter()
        final = sh([NOMALY, "resume", p, "--no-progress", "--json"], env=env)
        report = json.loads(final.stdout)
        print(f"final resume: {time.perf_counter() - t:.1f}s, recovery {json.dumps(report['recovery'])}")
        got = parts(os.path.join(dir, "out", "scored"))
        same = got == expected
        events = manifest(os.path.join(dir, "out", "scored", "_nomaly"))
        valid = True
        for e in events:
            for part in e.get("parts", []):
                with open(os.path.join(dir, "out", "scored", part["path"]), "rb") as f:
                    b = f.read()
                valid &= len(b) == part["bytes"] and zlib.crc32(b) == part["crc32"]
        leftovers = [n for r, ds, fs in os.walk(dir) for n in fs + ds
                     if n.endswith(".tmp") or "nomaly-staging" in n or "nomaly-work" in n]
        q = sh([NOMALY, "sql", "--format", "csv", "--table", f"o={os.path.join(dir, 'out', 'scored')}",
                "-e", "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(CAST(is_anomaly AS INT)) FROM o"])
        counts = q.stdout.strip().splitlines()[-1]
        checks = {
            f"kills mid-run >= {min(20, a.kills)}": landed >= min(20, a.kills),
            f"chunks redone per resume <= {CPUS} (max {max(redone, default=0)})": max(redone, default=0) <= CPUS,
            f"resume to first commit < 5 s (max {max(first_commit, default=0):.2f}s, "
            f"mean {sum(first_commit) / max(1, len(first_commit)):.2f}s over {len(first_commit)})":
                max(first_commit, default=0) < 5,
            f"part files byte-identical ({len(got)} vs {len(expected)})": same,
            "manifest sizes and CRC-32s match": valid,
            f"no temp/staging files left {leftovers[:3]}": not leftovers,
            f"rows, distinct ids, min, max, anomalies = {counts}":
                counts.split(",")[:4] == [str(a.rows), str(a.rows), "0", str(a.rows - 1)],
        }
        for name, passed in checks.items():
            print(f"{'ok  ' if passed else 'FAIL'} {name}")
            ok &= passed
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
