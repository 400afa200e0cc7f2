"""Times Nomaly (release build) against PyOD / scikit-learn / DuckDB on the same Parquet file, in one
invocation, and prints throughput ratios. Not part of CI.

    pip install -r benchmarks/requirements.txt
    python3 benchmarks/generate.py --rows 10000000 --features 8 --out benchmarks/data/tx_10m.parquet
    python3 benchmarks/run.py benchmarks/data/tx_10m.parquet [--only iforest,ecod] [--memory-limit 256MB] [--repeat 3]
    python3 benchmarks/run.py benchmarks/data/tx_10m.parquet --baseline /tmp/nomaly-before --skip-reference
    python3 benchmarks/run.py benchmarks/data/tx_10m.parquet --no-avx512   # as a CPU without AVX-512 would

Every Nomaly run is `nomaly sql` writing scores to Parquet (COPY ... TO), i.e. scan + fit + score +
write; references time fit + score on arrays already in memory (their reading is not charged).
Peak RSS of each Nomaly process is measured from outside (/proc wait4 rusage), not self-reported.
Each measurement runs --repeat times (default 3, both sides) and the median is used: on a shared
2-core machine one run of the same command varies by 20% or more, enough to flip a ratio's verdict.
Nomaly's queries run in rounds (each query once per round), so drift hits every query alike.

--baseline BINARY times a second `nomaly` binary (say, one built from an earlier commit) in the same
rounds, query by query right after the current one, and prints after/before ratios next to each
side's run-to-run spread: a change is a regression only where the ratio is further from 1 than the
spread. The CPU model and its vector extensions are printed first: no speed figure without them.
"""
import statistics
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nomaly-target"))
NOMALY = os.path.join(TARGET, "release", "nomaly")


def build():
    subprocess.run(["cargo", "build", "--release", "-p", "nomaly-cli"], cwd=ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": TARGET})


def cpu():
    """The CPU model and the vector extensions the detectors' kernels choose between."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    simd = [x for x in ("avx512bw", "avx512f", "avx2") if x in flags] or ["no AVX2"]
    return f"{model}, {os.cpu_count()} cores, {' '.join(simd)}"


def spread(values):
    """(max - min) / median: how far one run of the same command strays."""
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else 0.0


NOMALY_ENV = dict(os.environ)


def run_nomaly(data, sql, memory_limit=None, partitions=None, binary=None):
    args = [binary or NOMALY, "sql", "--table", f"t={data}", "-e", sql]
    if memory_limit:
        args += ["--memory-limit", memory_limit]
    if partitions:
        args += ["--partitions", str(partitions)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=NOMALY_ENV)
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode()
    # Popen never sees the status wait4 reaped: take the exit code from it.
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"nomaly failed (exit {code}): {err}")
    return elapsed, rusage.ru_maxrss * 1024


def features(n):
    return ", ".join(f"f{j + 1}" for j in range(n))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--only", default="floor,zscore,hbos,ecod,copod,iforest,pca,mahalanobis,mcd",
                   help="comma-separated: floor, the detectors, text, hbos_text, iforest_text, eif_text "
                        "(a text feature beside two numbers, and the same three numeric)")
    p.add_argument("--memory-limit", default=None)
    p.add_argument("--mcd-rows", type=int, default=1_000_000,
                   help="rows PyOD's MCD is timed on (its time is scaled to the file's rows)")
    p.add_argument("--neighbour-rows", type=int, default=100_000,
                   help="rows PyOD's KNN and LOF are timed on (their time is scaled to the file's rows)")
    p.add_argument("--eif-rows", type=int, default=1_000_000,
                   help="rows the eif package is timed on (its time is scaled to the file's rows)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median counts")
    p.add_argument("--nomaly", default=None,
                   help=f"the nomaly binary to time (default {NOMALY}, built first unless --no-build)")
    p.add_argument("--baseline", default=None,
                   help="another nomaly binary to time in the same rounds (before/after comparisons)")
    p.add_argument("--no-avx512", action="store_true",
                   help="turn Nomaly's AVX-512 paths off (NOMALY_NO_AVX512=1), as on a CPU without them")
    a = p.parse_args()
    if a.no_avx512:
        NOMALY_ENV["NOMALY_NO_AVX512"] = "1"
    current = a.nomaly or NOMALY
    if a.nomaly:
        a.no_build = True
    for b in [current] + ([a.baseline] if a.baseline else []):
        if b != NOMALY and not os.access(b, os.X_OK):
            raise SystemExit(f"{b}: not an executable file")
    if a.baseline and not os.access(a.baseline, os.X_OK):
        raise SystemExit(f"--baseline {a.baseline}: not an executable file")
    print(f"CPU: {cpu()}" + ("; Nomaly's AVX-512 paths off (--no-avx512)" if a.no_avx512 else ""), flush=True)
    only = a.only.split(",")
    if not a.no_build:
        build()
    import numpy as np
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(a.data).metadata
    rows = meta.num_rows
    d = len([c for c in pq.read_schema(a.data).names if c.startswith("f")])
    feats = features(d)
    out = tempfile.mkdtemp(prefix="nomaly-bench-")
    results = {}

    queries = []
    if "floor" in only:
        queries.append(("floor", "SELECT id, f1 * 2 AS s FROM t"))
        # The same scan + write reading every feature once: what a one-pass detector could not beat.
        queries.append(("floor8", f"SELECT id, {' + '.join(f'f{j + 1}' for j in range(d))} AS s FROM t"))
    for alg in ["zscore", "hbos", "ecod", "copod", "iforest", "pca", "mahalanobis", "mcd", "knn", "lof", "loda", "eif"]:
        if alg in only:
            queries.append((alg, f"SELECT id, detect_anomalies('{alg}', {feats})['score'] AS s FROM t"))
    # Text (categorical) features: the first feature bucketed into text in the query (77 categories
    # on tx_10m) beside the next two; `text` times making that column alone.
    text_col = "CAST(CAST(f1 * 3 AS BIGINT) AS VARCHAR)"
    if "text" in only:
        queries.append(("text", f"SELECT id, {text_col} AS s FROM t"))
    for alg in ["hbos", "iforest", "eif"]:
        if f"{alg}_text" in only:
            queries.append((f"{alg}_text", f"SELECT id, detect_anomalies('{alg}', {text_col}, f2, f3)['score'] AS s FROM t"))
            queries.append((f"{alg}_3", f"SELECT id, detect_anomalies('{alg}', f1, f2, f3)['score'] AS s FROM t"))
    # Rounds of every query rather than each query's runs back to back, so a slow spell of the
    # machine lands on all of them alike instead of on one side of a ratio.
    runs = {name: [] for name, _ in queries}
    before = {name: [] for name, _ in queries}
    for _ in range(a.repeat):
        for name, select in queries:
            sql = f"COPY ({select}) TO '{out}/{name}.parquet' STORED AS PARQUET"
            runs[name].append(run_nomaly(a.data, sql, a.memory_limit, binary=current))
            if a.baseline:
                before[name].append(run_nomaly(a.data, sql, a.memory_limit, binary=a.baseline))
    if a.baseline:
        print(f"\nthis build vs --baseline {a.baseline}: medians of {a.repeat} runs, spread = (max - min) / median")
        for name, _ in queries:
            now = [r[0] for r in runs[name]]
            then = [r[0] for r in before[name]]
            ratio = statistics.median(now) / statistics.median(then)
            print(f"  {name:10} now {statistics.median(now):6.2f} s (spread {spread(now):4.0%})  "
                  f"before {statistics.median(then):6.2f} s (spread {spread(then):4.0%})  "
                  f"now/before {ratio:5.2f}  peak RSS {max(r[1] for r in runs[name]) / 2**20:5.0f} / "
                  f"{max(r[1] for r in before[name]) / 2**20:5.0f} MiB", flush=True)
        print()
    for name, _ in queries:
        t = statistics.median(r[0] for r in runs[name])
        rss = max(r[1] for r in runs[name])
        results[name] = t
        each = " ".join(f"{r[0]:.2f}" for r in runs[name])
        print(f"nomaly {name:10} {t:8.2f} s  {rows / t / 1e6:7.2f} M rows/s  peak RSS {rss / 2**20:7.0f} MiB  (runs: {each})",
              flush=True)
    floor, floor8 = results.get("floor"), results.get("floor8")

    if a.skip_reference:
        return
    X = np.column_stack([pq.read_table(a.data, columns=[f"f{j + 1}"]).column(0).to_numpy() for j in range(d)])
    ref = {}

    def timed(name, fn):
        runs = []
        for _ in range(a.repeat):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        ref[name] = statistics.median(runs)
        each = " ".join(f"{r:.2f}" for r in runs)
        print(f"ref    {name:10} {ref[name]:8.2f} s  {rows / ref[name] / 1e6:7.2f} M rows/s  (runs: {each})", flush=True)

    if "iforest" in only:
        from sklearn.ensemble import IsolationForest
        timed("iforest", lambda: IsolationForest(n_estimators=100, n_jobs=2, random_state=0).fit(X).score_samples(X))
    if "ecod" in only:
        from pyod.models.ecod import ECOD
        timed("ecod", lambda: ECOD(n_jobs=1).fit(X).decision_scores_)
    if "copod" in only:
        from pyod.models.copod import COPOD
        timed("copod", lambda: COPOD(n_jobs=1).fit(X).decision_scores_)
    if "pca" in only:
        from pyod.models.pca import PCA
        timed("pca", lambda: PCA().fit(X).decision_scores_)
    if "mahalanobis" in only:
        from sklearn.covariance import EmpiricalCovariance
        timed("mahalanobis", lambda: EmpiricalCovariance().fit(X).mahalanobis(X))
    if "mcd" in only:
        # PyOD's MCD runs FastMCD on all rows; at 10M that is minutes, so it is timed on
        # --mcd-rows rows (stated in the output) and the rate compared.
        from pyod.models.mcd import MCD
        timed("mcd", lambda: MCD(random_state=0).fit(X[: a.mcd_rows]).decision_scores_)
        ref["mcd"] *= rows / min(rows, a.mcd_rows)
        print(f"ref    mcd        fitted on {min(rows, a.mcd_rows):,} rows; scaled to {rows:,} rows: {ref['mcd']:.2f} s")
    # PyOD's KNN and LOF put every row in their tree and query every row: hours at 10M rows, so
    # they are timed on --neighbour-rows rows and scaled linearly (which flatters them: a query in
    # a bigger tree costs more).
    for alg in ["knn", "lof"]:
        if alg in only:
            from pyod.models.knn import KNN
            from pyod.models.lof import LOF
            n = min(rows, a.neighbour_rows)
            make = KNN if alg == "knn" else LOF
            timed(alg, lambda: make().fit(X[:n]).decision_scores_)
            ref[alg] *= rows / n
            print(f"ref    {alg:10} fitted on {n:,} rows; scaled to {rows:,} rows: {ref[alg]:.2f} s")
    if "loda" in only:
        from pyod.models.loda import LODA
        timed("loda", lambda: LODA().fit(X).decision_scores_)
    if "eif" in only:
        # The `eif` package (benchmarks/requirements.txt says how to install it), fully extended as
        # Nomaly's default, on --eif-rows rows and scaled.
        import eif
        n = min(rows, a.eif_rows)
        timed("eif", lambda: eif.iForest(X[:n], ntrees=100, sample_size=256, ExtensionLevel=d - 1,
                                         seed=0).compute_paths(X_in=X[:n]))
        ref["eif"] *= rows / n
        print(f"ref    eif        fitted on {n:,} rows; scaled to {rows:,} rows: {ref['eif']:.2f} s")
    if "zscore" in only:
        import duckdb
        con = duckdb.connect()
        z = " , ".join(f"abs(f{j + 1} - avg(f{j + 1}) OVER ()) / stddev_pop(f{j + 1}) OVER ()" for j in range(d))
        timed("zscore", lambda: con.execute(
            f"COPY (SELECT id, greatest({z}) AS s FROM read_parquet('{a.data}')) TO '{out}/duckdb_z.parquet' (FORMAT parquet)"))

    print(f"\nratios of medians over {a.repeat} runs (higher = Nomaly faster; floor = scan + write of the same file)")
    for alg in ["iforest", "ecod", "copod", "pca", "mahalanobis", "mcd", "knn", "lof", "loda", "eif", "zscore"]:
        if alg in results and alg in ref:
            print(f"  {alg:8} Nomaly vs reference: {ref[alg] / results[alg]:6.2f}x")
    for alg in ["hbos", "zscore", "pca", "mahalanobis", "mcd", "knn", "lof", "loda", "eif"]:
        if alg in results and floor:
            print(f"  {alg:8} time / floor:         {results[alg] / floor:6.2f}x  (target <= 2)")
            print(f"  {alg:8} time / {d}-column floor: {results[alg] / floor8:6.2f}x  (the same scan + write, reading every feature)")


if __name__ == "__main__":
    sys.exit(main())
