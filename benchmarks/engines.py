"""One pipeline on the three engines (release build). Not part of CI.

    python3 benchmarks/generate.py --rows 10000000 --features 8 --out benchmarks/data/tx_10m.parquet
    python3 benchmarks/engines.py benchmarks/data/tx_10m.parquet [--algorithm hbos] [--chunk-rows 1000000]

In one invocation it runs the same pipeline (input -> detect -> Parquet part files) with
  1. engine "local"       (DataFusion in the `nomaly` process),
  2. engine "standalone"  (a Ballista scheduler and executor inside the `nomaly` process),
  3. engine "ballista://" (`nomaly scheduler` and two `nomaly executor` processes on 127.0.0.1,
                           one task slot each: the machine's 2 cores, as for the other two),
and prints each wall time, its ratio to local (target for the cluster <= 1.5), the client
process's CPU seconds and peak RSS (measured from outside with wait4), and the bytes of Arrow data
the client received from Ballista against the bytes of part files written (the executors write the
part files; the target for the chunks' share is <= 1%). The part files of the three runs must be
byte-identical (SHA-256 of every part).
"""
import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from run import cpu  # benchmarks/run.py: the CPU model and its vector extensions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nomaly-target"))
NOMALY = os.path.join(TARGET, "release", "nomaly")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_measured(args):
    """Runs a command; returns (seconds, its CPU seconds, its peak RSS bytes, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read the pipes on threads so a chatty child cannot block; then reap with wait4.
    chunks = {"out": b"", "err": b""}

    def drain(name, pipe):
        chunks[name] = pipe.read()

    threads = [threading.Thread(target=drain, args=("out", proc.stdout)),
               threading.Thread(target=drain, args=("err", proc.stderr))]
    for t in threads:
        t.start()
    _, status, rusage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({code}): {chunks['err'].decode()[-3000:]}")
    cpu = rusage.ru_utime + rusage.ru_stime
    return elapsed, cpu, rusage.ru_maxrss * 1024, chunks["out"].decode()


def part_hashes(out_dir):
    hashes = {}
    for dirpath, _, files in os.walk(out_dir):
        for name in files:
            if name.startswith("part-"):
                path = os.path.join(dirpath, name)
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                hashes[os.path.relpath(path, out_dir)] = h.hexdigest()
    return hashes


class Cluster:
    """`nomaly scheduler` and two `nomaly executor` processes, stopped on exit."""

    def __init__(self, work, slots):
        self.port = free_port()
        self.procs = []
        self.logs = []
        self._spawn(work, "scheduler", ["scheduler", "--bind-port", str(self.port),
                                        "--log-level-setting", "warn"])
        self._wait(lambda: self._get("/api/state") is not None, "the scheduler")
        for i in range(2):
            wd = os.path.join(work, f"executor{i}")
            os.makedirs(wd, exist_ok=True)
            self._spawn(work, f"executor{i}", [
                "executor", "--scheduler-port", str(self.port),
                "--bind-port", str(free_port()), "--bind-grpc-port", str(free_port()),
                "--bind-health-port", str(free_port()), "--work-dir", wd,
                "--concurrent-tasks", str(slots), "--log-level-setting", "warn"])
        self._wait(lambda: len(json.loads(self._get("/api/executors") or "[]")) == 2, "two executors")

    def _spawn(self, work, name, args):
        log = open(os.path.join(work, f"{name}.log"), "w")
        self.logs.append(log)
        self.procs.append(subprocess.Popen([NOMALY] + args, stdout=log, stderr=log))

    def _get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    def _wait(self, ready, what):
        deadline = time.time() + 60
        while not ready():
            if time.time() > deadline:
                raise SystemExit(f"{what} not ready in 60 s")
            time.sleep(0.1)

    def executor_peak_rss(self):
        """Each executor process's peak resident set so far (VmHWM, bytes)."""
        peaks = []
        for p in self.procs[1:]:
            with open(f"/proc/{p.pid}/status") as f:
                kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
            peaks.append(kb * 1024)
        return peaks

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()
        for log in self.logs:
            log.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--algorithm", default="hbos")
    p.add_argument("--chunk-rows", default="1000000")
    p.add_argument("--keep", action="store_true", help="keep the outputs (default: removed)")
    a = p.parse_args()
    data = os.path.abspath(a.data)
    import pyarrow.parquet as pq

    feats = [c for c in pq.read_schema(data).names if c.startswith("f")]
    work = tempfile.mkdtemp(prefix="nomaly-engines-bench-", dir=os.path.join(ROOT, "benchmarks", "data"))
    print(f"CPU: {cpu()}")
    print(f"data: {data} ({pq.ParquetFile(data).metadata.num_rows} rows), algorithm {a.algorithm}, "
          f"chunk_rows {a.chunk_rows}\n", flush=True)

    cluster = Cluster(work, slots=1)
    results = {}
    try:
        for name, engine in [("local", "local"), ("standalone", "standalone"),
                             ("cluster", f"ballista://127.0.0.1:{cluster.port}")]:
            pipe = os.path.join(work, f"{name}.toml")
            with open(pipe, "w") as f:
                f.write(f'input = "{data}"\noutput = "{work}/out_{name}/"\n[detect]\n'
                        f'algorithm = "{a.algorithm}"\ncolumns = {json.dumps(feats)}\n'
                        f'[run]\nchunk_rows = {a.chunk_rows}\nengine = "{engine}"\n')
            t, cpu, rss, out = run_measured([NOMALY, "run", pipe, "--json", "--no-progress"])
            r = json.loads(out)
            written = sum(s["bytes"] for s in r["sinks"])
            results[name] = (t, r, part_hashes(os.path.join(work, f"out_{name}")))
            print(f"{name:10s} {t:7.2f} s  client CPU {cpu:6.2f} s  client peak RSS {rss / 2**20:5.0f} MiB  "
                  f"rows {r['output_rows']}  chunks {r['chunks']}  jobs {r['ballista_jobs']}  "
                  f"written {written / 2**20:.0f} MiB", flush=True)
            if name == "cluster":
                peaks = ", ".join(f"{p / 2**20:.0f} MiB" for p in cluster.executor_peak_rss())
                print(f"{'':10s} executors' peak RSS: {peaks}", flush=True)
            if name != "local":
                whole = r["bytes_from_cluster"]
                chunks = r["chunk_bytes_from_cluster"]
                print(f"{'':10s} received from Ballista: {whole / 2**10:.0f} KiB in all "
                      f"({whole / written:.4%} of the output), of which chunk summaries "
                      f"{chunks / 2**10:.1f} KiB ({chunks / written:.5%}); the rest is the fit's model states",
                      flush=True)
    finally:
        cluster.stop()

    local_t = results["local"][0]
    print()
    for name in ["standalone", "cluster"]:
        print(f"{name} / local: {results[name][0] / local_t:.2f}x"
              + ("  (target <= 1.5)" if name == "cluster" else ""))
    same = all(results[n][2] == results["local"][2] for n in ["standalone", "cluster"])
    print(f"part files byte-identical on the three engines: {same} "
          f"({len(results['local'][2])} parts each)")
    if not a.keep:
        subprocess.run(["rm", "-rf", work])
    ok = same and results["cluster"][0] / local_t <= 1.5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
