"""Pipeline throughput and memory on a large Parquet file (release build). Not part of CI.

    python3 benchmarks/generate.py --rows 10000000 --features 8 --out benchmarks/data/tx_10m.parquet
    python3 benchmarks/pipeline.py benchmarks/data/tx_10m.parquet [--algorithm hbos] [--memory-limit 512MB]

In one invocation it times
  1. `nomaly run` of a minimal pipeline (input -> detect -> Parquet part files), and
  2. the equivalent single statement `COPY (SELECT *, detect_anomalies(...) ...) TO 'x.parquet'`,
and prints the ratio (target <= 1.5); then
  3. the pipeline under --memory-limit with a step numbering rows in f1 order (a global sort: forces
     the detect input to be materialized and the sort to spill), checking the run completes, its report shows spilled bytes,
     and the process's peak RSS, measured from outside (wait4), stays under limit + overhead.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nomaly-target"))
NOMALY = os.path.join(TARGET, "release", "nomaly")
# What a process needs besides the pool: code, runtime, Parquet writer buffers, page cache of mmaps.
FIXED_OVERHEAD = 256 * 2**20


def timed(args):
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({code}): {err[-2000:]}")
    return elapsed, rusage.ru_maxrss * 1024, out


def parse_size(s):
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    s = s.strip().upper()
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return int(float(s[: -len(u)]) * units[u])
    return int(s)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--algorithm", default="hbos")
    p.add_argument("--memory-limit", default="512MB")
    p.add_argument("--chunk-rows", default="1000000")
    a = p.parse_args()
    data = os.path.abspath(a.data)
    import pyarrow.parquet as pq

    names = pq.read_schema(data).names
    feats = [c for c in names if c.startswith("f")]
    cols = ", ".join(f'"{c}"' for c in feats)
    work = tempfile.mkdtemp(prefix="nomaly-pipe-bench-")

    pipe = os.path.join(work, "p.toml")
    with open(pipe, "w") as f:
        f.write(f'input = "{data}"\noutput = "{work}/out/"\n[detect]\nalgorithm = "{a.algorithm}"\n'
                f'columns = {json.dumps(feats)}\n[run]\nchunk_rows = {a.chunk_rows}\n')
    t_pipe, rss_pipe, out = timed([NOMALY, "run", pipe, "--json", "--no-progress"])
    report = json.loads(out)
    print(f"pipeline   {t_pipe:7.2f} s  rows {report['output_rows']}  chunks {report['chunks']}  "
          f"anomalies {report['anomalies']}  peak RSS {rss_pipe / 2**20:.0f} MiB", flush=True)

    sql = (f"COPY (SELECT * EXCLUDE (a), a['score'] AS anomaly_score, a['is_anomaly'] AS is_anomaly FROM "
           f"(SELECT *, detect_anomalies('{a.algorithm}', {cols}) AS a FROM t)) TO '{work}/copy.parquet' STORED AS PARQUET")
    t_copy, rss_copy, _ = timed([NOMALY, "sql", "--table", f"t={data}", "-e", sql])
    print(f"single SQL {t_copy:7.2f} s  peak RSS {rss_copy / 2**20:.0f} MiB", flush=True)
    print(f"ratio pipeline / single statement: {t_pipe / t_copy:.2f}x  (target <= 1.5)\n", flush=True)

    limit = parse_size(a.memory_limit)
    spill = os.path.join(work, "spill.toml")
    with open(spill, "w") as f:
        f.write(f'input = "{data}"\n[[step]]\nname = "sorted"\nsql = "SELECT *, row_number() OVER (ORDER BY f1) AS rn FROM input"\n'
                f'[detect]\nalgorithm = "{a.algorithm}"\ncolumns = {json.dumps(feats)}\n'
                f'[[sink]]\npath = "{work}/sorted_out/"\n[run]\nchunk_rows = {a.chunk_rows}\n')
    t_spill, rss_spill, out = timed([NOMALY, "run", spill, "--json", "--no-progress",
                                     "--memory-limit", a.memory_limit])
    r = json.loads(out)
    print(f"sorting pipeline under --memory-limit {a.memory_limit}: {t_spill:.2f} s, status {r['status']}, "
          f"rows {r['output_rows']}, chunking {r['chunking']}, spilled {r['spill_bytes'] / 2**20:.0f} MiB, "
          f"peak pool {r['peak_pool_bytes'] / 2**20:.0f} MiB (reported), "
          f"peak RSS {rss_spill / 2**20:.0f} MiB (measured)")
    bound = limit + FIXED_OVERHEAD
    ok = rss_spill <= bound
    print(f"peak RSS {rss_spill / 2**20:.0f} MiB vs limit + fixed overhead {bound / 2**20:.0f} MiB: "
          f"{'within' if ok else 'OVER'}")
    subprocess.run(["rm", "-rf", work])
    return 0 if ok and r["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
