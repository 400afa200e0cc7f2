"""Scale suites: segments, memory budgets and input sizes, each one command, release build.

    python3 benchmarks/scale.py segments benchmarks/data/tx_10m.parquet [--segments 10,1000,10000,100000] [--repeat 3]
    python3 benchmarks/scale.py budgets  benchmarks/data/tx_10m.parquet [--budgets 256MB,512MB,1GB,4GB]
    python3 benchmarks/scale.py rows     [--sizes 1000000,10000000,100000000]
    python3 benchmarks/scale.py big      [--rows 155000000] [--memory-limit 4GB]
    python3 benchmarks/scale.py pipeline-segments benchmarks/data/tx_10m.parquet [--segments 1000,10000]
        [--memory-limit 1GB] [--engines local,standalone] [--detectors iforest]

Every run is `nomaly sql` writing scores to Parquet (COPY ... TO: scan + fit + score + write), in a
fresh process whose peak RSS is read from the OS (wait4 rusage), never self-reported. Each suite
prints a table and writes it as JSON (--json, default benchmarks/results/<suite>.json):

- segments: `detect_anomalies(alg, f1..f8) OVER (PARTITION BY id % N)` for N segments against the
  same detector without PARTITION BY, in the same invocation; the ratio is segmented / unsegmented,
  each the median of --repeat runs (default 1).
- budgets: every detector under `--memory-limit X`, as SQL and as the example pipeline
  (examples/pipelines/minimal.toml pointed at the file): time, peak RSS and whether RSS stayed
  within X.
- big: a 10 GB input (155M rows x 8 features, generated once) through `nomaly run` (the example
  pipeline, iforest) under `--memory-limit` (default 4GB): time, rows/s, peak RSS, spill bytes.
- pipeline-segments: `nomaly run` of a pipeline with `[detect] partition_by = ["seg"]` (a step
  adds `seg = id % N`) under `--memory-limit` (default 1GB) on each engine: time, OS-measured peak
  RSS, whether it stayed within the limit, and how many of its scores equal the SQL form's
  (`detect_anomalies(...) OVER (PARTITION BY id % N)`, run once without a limit).
- rows: the generated files of each size (benchmarks/generate.py, skipped with a message when the
  disk cannot hold the file and its output); time, rows/s, peak RSS and the ratio to the previous
  size.

The CPU model and its vector extensions are printed first: no speed figure without them.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NOMALY, NOMALY_ENV, ROOT, build, cpu, features  # noqa: E402

DETECTORS = ["zscore", "hbos", "ecod", "copod", "iforest"]


def measure(args, io=False):
    """(seconds, peak RSS bytes, error text or None, stdout bytes) of one process, its peak RSS
    read from the OS (wait4 rusage). Output goes to files, so a chatty process cannot block on a
    full pipe before it is reaped. With io=True a fifth item: the bytes it read and wrote
    (/proc/PID/io, read while it is a zombie, waited for without reaping)."""
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out_f, stderr=err_f, env=NOMALY_ENV)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        elapsed = time.perf_counter() - start
        counters = {}
        if io:
            with open(f"/proc/{proc.pid}/io") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    counters[key] = int(value)
        _, status, rusage = os.wait4(proc.pid, 0)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read().decode().strip()
    failed = os.waitstatus_to_exitcode(status) != 0
    result = (elapsed, rusage.ru_maxrss * 1024, (stderr or "failed") if failed else None, stdout)
    return result + (counters["rchar"] + counters["wchar"],) if io else result


def run(data, sql, memory_limit=None):
    """(seconds, peak RSS bytes, error text or None) of one `nomaly sql` process."""
    args = [NOMALY, "sql", "--no-progress", "--table", f"t={data}", "-e", sql]
    if memory_limit:
        args += ["--memory-limit", memory_limit]
    return measure(args)[:3]


def median_run(data, sql, memory_limit, repeat):
    """(seconds, peak RSS bytes, error or None, every run's seconds) of the median of `repeat`
    `nomaly sql` runs: this shared 2-core VM's run-to-run spread is 10-30%."""
    runs = sorted((run(data, sql, memory_limit) for _ in range(max(1, repeat))), key=lambda r: r[0])
    t, rss, err = runs[len(runs) // 2]
    return t, rss, err, [r[0] for r in runs]


def run_pipeline(data, alg, out, memory_limit=None):
    """(seconds, peak RSS bytes, error text or None, the run's JSON report or None) of one
    `nomaly run` of the example pipeline pointed at `data`."""
    feats = ",".join(f'"{c}"' for c in features(width(data)).split(", "))
    args = [NOMALY, "run", os.path.join(ROOT, "examples", "pipelines", "minimal.toml"), "--no-progress", "--json",
            "--set", f'input="{os.path.abspath(data)}"', "--set", f"detect.columns=[{feats}]",
            "--set", f'detect.algorithm="{alg}"', "--set", f'output="{out}/"']
    if memory_limit:
        args += ["--memory-limit", memory_limit]
    elapsed, rss, err, stdout = measure(args)
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    return elapsed, rss, err, report


def ensure_generated(data, n):
    """Writes the n-row file at `data` with generate.py unless it exists; returns why not when the
    disk cannot hold it and its scored output (~65 bytes per row each, and slack), else None."""
    if os.path.exists(data):
        return None
    os.makedirs(os.path.dirname(os.path.abspath(data)), exist_ok=True)
    need = n * 65 * 2.3
    free = shutil.disk_usage(os.path.dirname(data)).free
    if free < need:
        return (f"the file and its output need about {need / 2**30:.1f} GiB and the disk has "
                f"{free / 2**30:.1f} GiB free")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "generate.py"), "--rows", str(n),
                    "--features", "8", "--out", data], check=True)
    return None


def drop_caches_and_warm(data):
    """--drop-caches (root): empties the page cache (`sync; echo 1 > /proc/sys/vm/drop_caches`),
    then reads `data` once, so each size starts with the same free memory and a warm input
    whatever earlier builds and runs left cached."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")
    with open(data, "rb") as f:
        while f.read(1 << 24):
            pass


def evict_others(keep):
    """Drops every other benchmark file from the page cache (posix_fadvise DONTNEED; no root
    needed). A 100M-row run keeps ~7 GiB of batches: with the 10 GB file of `big` still cached,
    the kernel reclaimed cache during the run, and the run took 43.6 s instead of 35.0 s."""
    folder = os.path.dirname(os.path.abspath(keep))
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.path.realpath(path) != os.path.realpath(keep):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def width(data):
    import pyarrow.parquet as pq
    return len([c for c in pq.read_schema(data).names if c.startswith("f")])


def copy(select, out):
    return f"COPY ({select}) TO '{out}' STORED AS PARQUET"


def segments(a):
    d = width(a.data)
    feats = features(d)
    out = tempfile.mkdtemp(prefix="nomaly-scale-")
    rows = []
    for alg in a.detectors.split(","):
        whole = copy(f"SELECT id, detect_anomalies('{alg}', {feats})['score'] AS s FROM t", f"{out}/whole.parquet")
        t0, rss0, err0, runs0 = median_run(a.data, whole, a.memory_limit, a.repeat or 1)
        print(f"{alg:8} unsegmented {t0:8.2f} s  peak RSS {rss0 / 2**20:6.0f} MiB  {err0 or ''}", flush=True)
        for n in [int(x) for x in a.segments.split(",")]:
            sql = copy(
                f"SELECT id, detect_anomalies('{alg}', {feats}) OVER (PARTITION BY id % {n})['score'] AS s FROM t",
                f"{out}/seg.parquet")
            t, rss, err, runs = median_run(a.data, sql, a.memory_limit, a.repeat or 1)
            ratio = t / t0 if not err0 else None
            rows.append({"detector": alg, "segments": n, "seconds": t, "unsegmented_seconds": t0,
                         "ratio": ratio, "peak_rss_bytes": rss, "error": err,
                         "runs": runs, "unsegmented_runs": runs0})
            shown = f"{ratio:5.2f}x" if ratio else "  -  "
            print(f"{alg:8} {n:>7} segments {t:8.2f} s  {shown} unsegmented  peak RSS {rss / 2**20:6.0f} MiB"
                  f"  {('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def budgets(a):
    d = width(a.data)
    feats = features(d)
    out = tempfile.mkdtemp(prefix="nomaly-scale-")
    rows = []
    for budget in a.budgets.split(","):
        limit = parse_size(budget)
        for alg in a.detectors.split(","):
            sql = copy(f"SELECT id, detect_anomalies('{alg}', {feats})['score'] AS s FROM t", f"{out}/b.parquet")
            t, rss, err = run(a.data, sql, budget)
            within = rss <= limit
            rows.append({"budget": budget, "detector": alg, "seconds": t, "peak_rss_bytes": rss,
                         "within_budget": within, "error": err})
            print(f"{budget:>6} {alg:8} {t:8.2f} s  peak RSS {rss / 2**20:6.0f} MiB  "
                  f"{'within' if within else 'OVER'} the budget  {('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}",
                  flush=True)
        for alg in a.detectors.split(","):
            shutil.rmtree(f"{out}/p", ignore_errors=True)
            t, rss, err, report = run_pipeline(a.data, alg, f"{out}/p", budget)
            within = rss <= limit
            rows.append({"budget": budget, "detector": alg, "path": "pipeline", "seconds": t,
                         "peak_rss_bytes": rss, "within_budget": within, "error": err,
                         "spill_bytes": (report or {}).get("spill_bytes"),
                         "memory_process_bytes": (report or {}).get("memory_process_bytes"),
                         "memory_reader_bytes": (report or {}).get("memory_reader_bytes"),
                         "memory_pool_bytes": (report or {}).get("memory_pool_bytes")})
            print(f"{budget:>6} {alg:8} {t:8.2f} s  peak RSS {rss / 2**20:6.0f} MiB  "
                  f"{'within' if within else 'OVER'} the budget  (pipeline)  "
                  f"{('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def big(a):
    n = a.rows
    data = a.data or os.path.join(ROOT, "benchmarks", "data", f"tx_{n}.parquet")
    short = ensure_generated(data, n)
    if short:
        print(f"skipped: {short}", flush=True)
        return [{"rows": n, "skipped": short}]
    size = os.path.getsize(data)
    evict_others(data)
    limit = a.memory_limit or "4GB"
    out = tempfile.mkdtemp(prefix="nomaly-scale-", dir=os.path.dirname(os.path.abspath(data)))
    rows = []
    for alg in a.detectors.split(","):
        shutil.rmtree(f"{out}/p", ignore_errors=True)
        t, rss, err, report = run_pipeline(data, alg, f"{out}/p", limit)
        report = report or {}
        within = rss <= parse_size(limit)
        rows.append({"rows": n, "input_bytes": size, "detector": alg, "memory_limit": limit, "seconds": t,
                     "rows_per_second": n / t, "peak_rss_bytes": rss, "within_budget": within,
                     "spill_bytes": report.get("spill_bytes"), "chunks": report.get("chunks"),
                     "output_rows": report.get("output_rows"), "error": err})
        print(f"{size / 1e9:5.2f} GB ({n} rows) {alg:8} --memory-limit {limit}: {t:8.1f} s  "
              f"{n / t / 1e6:5.2f} M rows/s  peak RSS {rss / 2**20:6.0f} MiB ({'within' if within else 'OVER'} the "
              f"budget)  spilled {report.get('spill_bytes')} bytes  {report.get('chunks')} chunks  "
              f"{report.get('output_rows')} rows out  {('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}",
              flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def sizes(a):
    rows, previous = [], {}
    for n in [int(x) for x in a.sizes.split(",")]:
        data = os.path.join(ROOT, "benchmarks", "data", f"tx_{n}.parquet")
        short = ensure_generated(data, n)
        if short:
            print(f"{n:>11} rows: skipped, {short}", flush=True)
            rows.append({"rows": n, "skipped": short})
            continue
        feats = features(width(data))
        if a.drop_caches:
            drop_caches_and_warm(data)
        else:
            evict_others(data)
        out = tempfile.mkdtemp(prefix="nomaly-scale-")
        # Smaller inputs run --repeat times and give their median (their run-to-run spread on a
        # shared 2-core VM is 10-30%); the largest runs once.
        repeat = (a.repeat or 3) if n < a.repeat_below else 1
        for alg in a.detectors.split(","):
            sql = copy(f"SELECT id, detect_anomalies('{alg}', {feats})['score'] AS s FROM t", f"{out}/r.parquet")
            t, rss, err, runs = median_run(data, sql, a.memory_limit, repeat)
            before = previous.get(alg)
            growth = t / before[1] if before else None
            previous[alg] = (n, t)
            rows.append({"rows": n, "detector": alg, "seconds": t, "runs": runs, "rows_per_second": n / t,
                         "peak_rss_bytes": rss, "time_ratio_to_previous_size": growth, "error": err})
            grew = f"  time x{growth:.2f} for x{n / before[0]:.0f} rows" if before else ""
            print(f"{n:>11} rows {alg:8} {t:8.2f} s  {n / t / 1e6:6.2f} M rows/s  peak RSS {rss / 2**20:6.0f} MiB"
                  f"{grew}  {('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def write_segment_pipeline(path, data, target, alg, columns, n):
    """A pipeline scoring `data` per segment `id % n` into `target`."""
    with open(path, "w") as f:
        f.write(f'input = "{os.path.abspath(data)}"\noutput = "{target}/"\n'
                f'[[step]]\nname = "keyed"\nsql = "SELECT *, id % {n} AS seg FROM input"\n'
                f'[detect]\nalgorithm = "{alg}"\ncolumns = [{columns}]\npartition_by = ["seg"]\n')


def scores_equal_to_sql(target, reference):
    """"rows,rows with the SQL form's score" of a pipeline output against the SQL form's file."""
    _, _, err, counts = measure([
        NOMALY, "sql", "--no-progress", "--format", "csv", "--table", f"o={target}",
        "--table", f"s={reference}", "-e",
        "SELECT count(*), count(*) FILTER (WHERE o.anomaly_score = s.s) FROM o JOIN s ON o.id = s.id"])
    return None if err else counts.decode().split()[-1]


def pipeline_segments(a):
    d = width(a.data)
    feats = features(d)
    columns = ", ".join(f'"{c}"' for c in feats.split(", "))
    limit = a.memory_limit or "1GB"
    out = tempfile.mkdtemp(prefix="nomaly-scale-")
    rows = []
    for alg in a.detectors.split(","):
        for n in [int(x) for x in a.segments.split(",")]:
            reference = f"{out}/sql_{alg}_{n}.parquet"
            t_sql, _, err, _ = measure([NOMALY, "sql", "--no-progress", "--table", f"t={a.data}", "-e", copy(
                f"SELECT id, detect_anomalies('{alg}', {feats}) OVER (PARTITION BY id % {n})['score'] AS s "
                f"FROM t", reference)])
            if err:
                print(f"{alg:8} {n:>6} segments: the SQL form failed: {err.splitlines()[-1][:160]}", flush=True)
                continue
            for engine in a.engines.split(","):
                target = f"{out}/{engine}_{alg}_{n}"
                pipeline = f"{out}/{engine}_{alg}_{n}.toml"
                write_segment_pipeline(pipeline, a.data, target, alg, columns, n)
                t, rss, err, stdout = measure([NOMALY, "run", pipeline, "--no-progress", "--json",
                                               "--memory-limit", limit, "--engine", engine])
                equal = None if err else scores_equal_to_sql(target, reference)
                report = json.loads(stdout) if not err else {}
                within = rss <= parse_size(limit)
                rows.append({"detector": alg, "segments": n, "engine": engine, "memory_limit": limit,
                             "seconds": t, "sql_seconds": t_sql, "peak_rss_bytes": rss, "within": within,
                             "chunks": report.get("chunks"), "chunking": report.get("chunking"),
                             "equal_to_sql": equal, "error": err})
                print(f"{alg:8} {n:>6} segments {engine:10} {t:8.2f} s (SQL {t_sql:6.2f} s)  peak RSS "
                      f"{rss / 2**20:6.0f} MiB {'within' if within else 'OVER'} {limit}  "
                      f"{report.get('chunks')} chunks  rows, equal to SQL: {equal}"
                      f"  {('FAILED: ' + err.splitlines()[-1][:160]) if err else ''}", flush=True)
                shutil.rmtree(target, ignore_errors=True)
            os.remove(reference)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def parse_size(text):
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["segments", "budgets", "rows", "big", "pipeline-segments"])
    p.add_argument("data", nargs="?", help="the Parquet file (segments, budgets)")
    p.add_argument("--detectors", default=",".join(DETECTORS))
    p.add_argument("--segments", default="10,1000,10000,100000")
    p.add_argument("--budgets", default="256MB,512MB,1GB,4GB")
    p.add_argument("--engines", default="local,standalone", help="pipeline-segments: the engines to run on")
    p.add_argument("--sizes", default="1000000,10000000,100000000")
    p.add_argument("--memory-limit", default=None, help="for segments, rows and big (default 4GB there)")
    p.add_argument("--rows", type=int, default=155_000_000, help="big: rows of the generated input (~65 B/row)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per measurement, the median reported: rows (default 3, on inputs below "
                        "--repeat-below rows) and segments (default 1)")
    p.add_argument("--repeat-below", type=int, default=50_000_000)
    p.add_argument("--drop-caches", action="store_true",
                   help="rows: empty the page cache before each size and warm its input (needs root)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-avx512", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.suite == "pipeline-segments" and a.segments == "10,1000,10000,100000":
        a.segments = "1000,10000"
    if a.suite == "pipeline-segments" and a.detectors == ",".join(DETECTORS):
        a.detectors = "iforest"
    if a.suite in ("segments", "budgets", "pipeline-segments") and not a.data:
        p.error(f"{a.suite} needs the Parquet file to read, e.g. benchmarks/data/tx_10m.parquet")
    if a.no_avx512:
        NOMALY_ENV["NOMALY_NO_AVX512"] = "1"
    print(f"CPU: {cpu()}" + ("; Nomaly's AVX-512 paths off" if a.no_avx512 else ""), flush=True)
    if not a.no_build:
        build()
    suites = {"segments": segments, "budgets": budgets, "rows": sizes, "big": big,
              "pipeline-segments": pipeline_segments}
    rows = suites[a.suite](a)
    path = a.json or os.path.join(ROOT, "benchmarks", "results", f"{a.suite}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"cpu": cpu(), "no_avx512": a.no_avx512, "suite": a.suite, "results": rows}, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
