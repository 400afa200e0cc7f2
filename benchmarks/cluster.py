"""A Ballista cluster on this machine, measured: one invocation, release build.

    python3 benchmarks/cluster.py segments benchmarks/data/tx_10m.parquet [--segments 1000,10000]
        [--executors 2] [--memory-limit 512MB] [--detectors iforest]
    python3 benchmarks/cluster.py pipeline-segments benchmarks/data/tx_10m.parquet [--segments 10000]
        [--memory-limit 1GB]
    python3 benchmarks/cluster.py unsegmented benchmarks/data/tx_10m.parquet
        [--detectors zscore,hbos,ecod,copod,iforest] [--executors 2] [--memory-limit 4GB] [--repeat 3]

pipeline-segments: a `[detect] partition_by` pipeline over `seg = id % N` run by `nomaly run --engine
ballista://` on fresh executors, client and executors with --memory-limit (default 1GB): the time,
every executor's and the client's peak RSS, and how many scores equal the SQL form's (local).

unsegmented: every detector without PARTITION BY, on the local engine and on the cluster (one
cluster for all), each written to Parquet: the median times of --repeat runs (local and cluster
alternated) and the ratio cluster / local.

segments: `nomaly scheduler` and N `nomaly executor --memory-limit X` processes on 127.0.0.1, then
for each detector and segment count `detect_anomalies(...) OVER (PARTITION BY id % S)` through
`nomaly sql --engine ballista://...` written to Parquet, and the same query on the local engine
(no limit). Prints the cluster's time, the local time, every executor's peak RSS (VmHWM from
/proc, read before the executor is replaced: each query gets fresh executors, so each peak is its
own), whether each stayed within X, and how many scores equal the local ones. Writes
benchmarks/results/cluster_segments.json (--json). The CPU is printed first.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NOMALY, NOMALY_ENV, ROOT, build, cpu, features  # noqa: E402
from scale import copy, measure, parse_size, scores_equal_to_sql, width, write_segment_pipeline  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def peak_rss(pid):
    """VmHWM of a live process, in bytes (the kernel's high-water mark of its resident set)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Cluster:
    """A scheduler and `n` executors with `memory_limit` each, stopped on exit."""

    def __init__(self, n, memory_limit, work):
        self.procs, self.executors = [], []
        self.port = free_port()
        log = open(os.path.join(work, "cluster.log"), "ab")
        self.procs.append(subprocess.Popen(
            [NOMALY, "scheduler", "--bind-port", str(self.port)],
            stdout=log, stderr=log, env=NOMALY_ENV))
        wait_port(self.port)
        for i in range(n):
            flight, grpc, health = free_port(), free_port(), free_port()
            p = subprocess.Popen(
                [NOMALY, "executor", "--scheduler-port", str(self.port), "--bind-port", str(flight),
                 "--bind-grpc-port", str(grpc), "--bind-health-port", str(health),
                 "--memory-limit", memory_limit, "--work-dir", os.path.join(work, f"executor-{i}")],
                stdout=log, stderr=log, env=NOMALY_ENV)
            os.makedirs(os.path.join(work, f"executor-{i}"), exist_ok=True)
            self.procs.append(p)
            self.executors.append(p)
            wait_port(flight)
        time.sleep(2)  # the executors register with the scheduler

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def segments(a):
    feats = features(width(a.data))
    limit = a.memory_limit
    out = tempfile.mkdtemp(prefix="nomaly-cluster-")
    rows = []
    for alg in a.detectors.split(","):
        for n in [int(x) for x in a.segments.split(",")]:
            select = (f"SELECT id, detect_anomalies('{alg}', {feats}) OVER (PARTITION BY id % {n})['score'] AS s "
                      f"FROM t")
            local_out, cluster_out = f"{out}/local.parquet", f"{out}/cluster"
            t_local, _, err, _ = measure([NOMALY, "sql", "--no-progress", "--table", f"t={a.data}",
                                          "-e", copy(select, local_out)])
            if err:
                print(f"{alg} {n}: the local run failed: {err.splitlines()[-1][:160]}", flush=True)
                continue
            cluster = Cluster(a.executors, limit, out)
            try:
                t, _, err, _ = measure([NOMALY, "sql", "--no-progress", "--engine",
                                        f"ballista://127.0.0.1:{cluster.port}", "--table", f"t={a.data}",
                                        "-e", copy(select, cluster_out)])
                peaks = [peak_rss(p.pid) for p in cluster.executors]
            finally:
                cluster.stop()
            equal = None
            if not err:
                _, _, cmp_err, counts = measure([
                    NOMALY, "sql", "--no-progress", "--format", "csv", "--table", f"c={cluster_out}",
                    "--table", f"l={local_out}", "-e",
                    "SELECT count(*), count(*) FILTER (WHERE c.s = l.s) FROM c JOIN l ON c.id = l.id"])
                equal = None if cmp_err else counts.decode().split()[-1]
            within = all(p <= parse_size(limit) for p in peaks)
            rows.append({"detector": alg, "segments": n, "executors": a.executors, "memory_limit": limit,
                         "seconds": t, "local_seconds": t_local, "executor_peak_rss_bytes": peaks,
                         "within": within, "equal_to_local": equal, "error": err})
            shown = ", ".join(f"{p / 2**20:.0f}" for p in peaks)
            print(f"{alg:8} {n:>6} segments  cluster {t:7.2f} s  local {t_local:7.2f} s  executor peak RSS "
                  f"[{shown}] MiB {'within' if within else 'OVER'} {limit}  rows, equal to local: {equal}"
                  f"  {('FAILED: ' + err.splitlines()[-1][:2000]) if err else ''}", flush=True)
            shutil.rmtree(cluster_out, ignore_errors=True)
            os.remove(local_out)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def pipeline_segments(a):
    """A `partition_by` pipeline (`seg = id % N`) on a fresh cluster whose executors and client
    have `--memory-limit`, against the SQL form on the local engine."""
    feats = features(width(a.data))
    columns = ", ".join(f'"{c}"' for c in feats.split(", "))
    limit = a.memory_limit
    out = tempfile.mkdtemp(prefix="nomaly-cluster-")
    rows = []
    for alg in a.detectors.split(","):
        for n in [int(x) for x in a.segments.split(",")]:
            reference = f"{out}/sql.parquet"
            _, _, err, _ = measure([NOMALY, "sql", "--no-progress", "--table", f"t={a.data}", "-e", copy(
                f"SELECT id, detect_anomalies('{alg}', {feats}) OVER (PARTITION BY id % {n})['score'] AS s "
                f"FROM t", reference)])
            if err:
                print(f"{alg} {n}: the SQL form failed: {err.splitlines()[-1][:160]}", flush=True)
                continue
            target, pipeline = f"{out}/scored", f"{out}/p.toml"
            write_segment_pipeline(pipeline, a.data, target, alg, columns, n)
            cluster = Cluster(a.executors, limit, out)
            try:
                t, client_rss, err, _ = measure([NOMALY, "run", pipeline, "--no-progress", "--memory-limit", limit,
                                                 "--engine", f"ballista://127.0.0.1:{cluster.port}"])
                peaks = [peak_rss(p.pid) for p in cluster.executors]
            finally:
                cluster.stop()
            equal = None if err else scores_equal_to_sql(target, reference)
            within = all(p <= parse_size(limit) for p in peaks + [client_rss])
            rows.append({"detector": alg, "segments": n, "executors": a.executors, "memory_limit": limit,
                         "seconds": t, "executor_peak_rss_bytes": peaks, "client_peak_rss_bytes": client_rss,
                         "within": within, "equal_to_sql": equal, "error": err})
            shown = ", ".join(f"{p / 2**20:.0f}" for p in peaks)
            print(f"{alg:8} {n:>6} segments  pipeline on the cluster {t:7.2f} s  executor peak RSS [{shown}] MiB, "
                  f"client {client_rss / 2**20:.0f} MiB {'within' if within else 'OVER'} {limit}  rows, equal to "
                  f"SQL: {equal}  {('FAILED: ' + err.splitlines()[-1][:2000]) if err else ''}", flush=True)
            shutil.rmtree(target, ignore_errors=True)
            os.remove(reference)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def unsegmented(a):
    feats = features(width(a.data))
    out = tempfile.mkdtemp(prefix="nomaly-cluster-")
    rows = []
    cluster = Cluster(a.executors, a.memory_limit, out)
    try:
        for alg in a.detectors.split(","):
            select = f"SELECT id, detect_anomalies('{alg}', {feats})['score'] AS s FROM t"
            local_runs, cluster_runs = [], []
            for _ in range(max(1, a.repeat)):
                local_runs.append(measure([NOMALY, "sql", "--no-progress", "--table", f"t={a.data}",
                                           "-e", copy(select, f"{out}/local.parquet")]))
                cluster_runs.append(measure([NOMALY, "sql", "--no-progress", "--engine",
                                             f"ballista://127.0.0.1:{cluster.port}", "--table",
                                             f"t={a.data}", "-e", copy(select, f"{out}/cluster")]))
                shutil.rmtree(f"{out}/cluster", ignore_errors=True)
            # The median of --repeat runs of each, alternated: this 2-core VM's spread is 10-30%.
            t_local, _, err_local, _ = sorted(local_runs, key=lambda r: r[0])[len(local_runs) // 2]
            t, _, err, _ = sorted(cluster_runs, key=lambda r: r[0])[len(cluster_runs) // 2]
            ratio = t / t_local if not (err or err_local) else None
            rows.append({"detector": alg, "executors": a.executors, "seconds": t, "local_seconds": t_local,
                         "ratio": ratio, "error": err or err_local, "repeat": a.repeat,
                         "cluster_runs": [r[0] for r in cluster_runs],
                         "local_runs": [r[0] for r in local_runs]})
            shown = f"{ratio:5.2f}x" if ratio else "  -  "
            print(f"{alg:8} cluster {t:7.2f} s  local {t_local:7.2f} s  {shown}"
                  f"  {('FAILED: ' + (err or err_local).splitlines()[-1][:2000]) if (err or err_local) else ''}",
                  flush=True)
            shutil.rmtree(f"{out}/cluster", ignore_errors=True)
    finally:
        cluster.stop()
    shutil.rmtree(out, ignore_errors=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["segments", "pipeline-segments", "unsegmented"])
    p.add_argument("data", help="the Parquet file, e.g. benchmarks/data/tx_10m.parquet")
    p.add_argument("--segments", default="1000,10000")
    p.add_argument("--detectors", default=None, help="default: iforest (segments), all (unsegmented)")
    p.add_argument("--executors", type=int, default=2)
    p.add_argument("--memory-limit", default=None,
                   help="each executor's --memory-limit (default 512MB for segments, 4GB otherwise)")
    p.add_argument("--repeat", type=int, default=3, help="unsegmented: runs of each, median shown")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    a.detectors = a.detectors or ("zscore,hbos,ecod,copod,iforest" if a.suite == "unsegmented" else "iforest")
    a.memory_limit = a.memory_limit or {"segments": "512MB", "pipeline-segments": "1GB"}.get(a.suite, "4GB")
    print(f"CPU: {cpu()}", flush=True)
    if not a.no_build:
        build()
    rows = {"segments": segments, "pipeline-segments": pipeline_segments, "unsegmented": unsegmented}[a.suite](a)
    path = a.json or os.path.join(ROOT, "benchmarks", "results", f"cluster_{a.suite}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"cpu": cpu(), "suite": a.suite, "results": rows}, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
