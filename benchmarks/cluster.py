"""A Ballista cluster on this machine, measured: one invocation, release build.

    python3 benchmarks/cluster.py segments benchmarks/data/tx_10m.parquet [--segments 1000,10000]
        [--executors 2] [--memory-limit 512MB] [--detectors iforest]
    python3 benchmarks/cluster.py pipeline-segments benchmarks/data/tx_10m.parquet [--segments 10000]
        [--memory-limit 1GB]
    python3 benchmarks/cluster.py unsegmented benchmarks/data/tx_10m.parquet
        [--detectors zscore,hbos,ecod,copod,iforest] [--executors 2] [--memory-limit 4GB] [--repeat 3]
    python3 benchmarks/cluster.py generated [--logical-gb 100] [--executors 4] [--memory-limit 1GB]
        [--detectors zscore] [--features 8] [--node-cores 2,16] [--no-local]

generated: `synthetic_rows(N, features, seed)` (rows made by the executors from a seed, read from no
disk) through `detect_anomalies` on a scheduler and --executors executors (one task slot each) on
this machine, N chosen so the rows' Arrow bytes (id, features, planted) are --logical-gb; the output
is counted (rows, flagged, flagged among the planted, planted), not written: 100 GB of scores do not
fit this disk. Prints the time, rows/s per core of this machine, every executor's peak RSS, the
client's peak RSS and the bytes it read and wrote (/proc/PID/io, all I/O: the rows stay on the
executors), the same counts from the local engine (unless --no-local), and the time an 8-node
cluster of --node-cores cores each would take at the measured per-core rate (linear scaling, no
network cost: a projection, not a measurement).

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

    def __init__(self, n, memory_limit, work, vcores=None):
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
                 "--memory-limit", memory_limit, "--work-dir", os.path.join(work, f"executor-{i}")]
                + (["--vcores", str(vcores)] if vcores else []),
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


def generated(a):
    """A 100 GB (logical) generated input through a cluster of --executors processes."""
    row_bytes = 8 + 8 * a.features + 1  # id, the features, planted: their Arrow buffers
    rows = int(a.logical_gb * 1e9 / row_bytes)
    cores = os.cpu_count()
    feats = ", ".join(f"f{j}" for j in range(a.features))
    out = tempfile.mkdtemp(prefix="nomaly-cluster-")
    results = []
    for alg in a.detectors.split(","):
        select = (f"SELECT count(*) AS n, count(*) FILTER (WHERE a['is_anomaly']) AS flagged, "
                  f"count(*) FILTER (WHERE a['is_anomaly'] AND planted) AS flagged_planted, "
                  f"count(*) FILTER (WHERE planted) AS planted FROM (SELECT planted, "
                  f"detect_anomalies('{alg}', {feats}) AS a FROM synthetic_rows({rows}, {a.features}, 1))")
        cluster = Cluster(a.executors, a.memory_limit, out, vcores=1)
        try:
            t, client_rss, err, counts, client_io = measure([
                NOMALY, "sql", "--no-progress", "--format", "csv", "--partitions", str(a.partitions),
                "--engine", f"ballista://127.0.0.1:{cluster.port}", "-e", select], io=True)
            peaks = [peak_rss(p.pid) for p in cluster.executors]
        finally:
            cluster.stop()
        counts = None if err else counts.decode().split()[-1]
        local = local_t = None
        if not a.no_local and not err:
            local_t, _, local_err, local = measure([NOMALY, "sql", "--no-progress", "--format", "csv", "-e",
                                                     select])
            local = local_err.splitlines()[-1][:300] if local_err else local.decode().split()[-1]
        per_core = rows / t / cores if not err else None
        within = all(p <= parse_size(a.memory_limit) for p in peaks)
        projections = {n: rows / (per_core * 8 * n) for n in a.node_cores} if per_core else {}
        results.append({"detector": alg, "rows": rows, "logical_bytes": rows * row_bytes,
                        "executors": a.executors, "partitions": a.partitions, "memory_limit": a.memory_limit,
                        "seconds": t, "rows_per_second": rows / t if not err else None, "machine_cores": cores,
                        "rows_per_second_per_core": per_core, "executor_peak_rss_bytes": peaks,
                        "within": within, "client_peak_rss_bytes": client_rss, "client_io_bytes": client_io,
                        "counts": counts, "local_counts": local, "local_seconds": local_t,
                        "equal_to_local": None if local is None else counts == local,
                        "projection_8_nodes_seconds": projections, "error": err})
        if err:
            print(f"{alg}: FAILED after {t:.1f} s: {err.splitlines()[-1][:2000]}", flush=True)
            continue
        shown = ", ".join(f"{p / 2**20:.0f}" for p in peaks)
        print(f"{alg:8} {rows:,} rows ({rows * row_bytes / 1e9:.1f} GB logical) on {a.executors} executors: "
              f"{t:.1f} s, {rows / t / 1e6:.2f} M rows/s, {per_core / 1e6:.2f} M rows/s per core ({cores} cores)",
              flush=True)
        print(f"         executor peak RSS [{shown}] MiB {'within' if within else 'OVER'} {a.memory_limit}; "
              f"client peak RSS {client_rss / 2**20:.0f} MiB, client I/O {client_io / 1e6:.2f} MB", flush=True)
        print(f"         rows, flagged, flagged planted, planted: cluster {counts}"
              + ("" if local is None else f"  local {local} ({local_t:.1f} s): "
                 f"{'equal' if counts == local else 'DIFFERENT'}"), flush=True)
        for n, secs in projections.items():
            print(f"         projection: 8 nodes x {n} cores at {per_core / 1e6:.2f} M rows/s per core: "
                  f"{secs:.1f} s for these {rows * row_bytes / 1e9:.0f} GB", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["segments", "pipeline-segments", "unsegmented", "generated"])
    p.add_argument("data", nargs="?", help="the Parquet file, e.g. benchmarks/data/tx_10m.parquet "
                   "(not for generated)")
    p.add_argument("--segments", default="1000,10000")
    p.add_argument("--detectors", default=None,
                   help="default: iforest (segments), all (unsegmented), zscore (generated)")
    p.add_argument("--executors", type=int, default=None, help="default 2 (4 for generated)")
    p.add_argument("--memory-limit", default=None,
                   help="each executor's --memory-limit (default 512MB for segments, 4GB otherwise)")
    p.add_argument("--repeat", type=int, default=3, help="unsegmented: runs of each, median shown")
    p.add_argument("--logical-gb", type=float, default=100.0, help="generated: the input's size")
    p.add_argument("--features", type=int, default=8, help="generated: feature columns")
    p.add_argument("--partitions", type=int, default=32, help="generated: the query's partitions (tasks)")
    p.add_argument("--node-cores", default="2,16", help="generated: cores per node of the projected 8 nodes")
    p.add_argument("--no-local", action="store_true", help="generated: skip the local engine's run")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    a.executors_given = a.executors is not None
    a.executors = a.executors or 2
    a.detectors = a.detectors or {"unsegmented": "zscore,hbos,ecod,copod,iforest",
                                  "generated": "zscore"}.get(a.suite, "iforest")
    a.memory_limit = a.memory_limit or {"segments": "512MB", "pipeline-segments": "1GB",
                                        "generated": "1GB"}.get(a.suite, "4GB")
    a.node_cores = [int(x) for x in a.node_cores.split(",")]
    if a.suite == "generated":
        a.executors = a.executors if a.executors_given else 4
    elif not a.data:
        p.error(f"{a.suite} needs the Parquet file")
    print(f"CPU: {cpu()}", flush=True)
    if not a.no_build:
        build()
    rows = {"segments": segments, "pipeline-segments": pipeline_segments, "unsegmented": unsegmented,
            "generated": generated}[a.suite](a)
    path = a.json or os.path.join(ROOT, "benchmarks", "results", f"cluster_{a.suite}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"cpu": cpu(), "suite": a.suite, "results": rows}, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
