"""How soon `nomaly serve` tells (release build). Not part of CI: the tests assert order, this
measures time.

    pip install -r benchmarks/requirements.txt; cargo build --release -p nomaly-cli
    python3 benchmarks/serve.py [--runs 3] [--chunks 20] [--nomaly BINARY]

In one invocation it starts a release `nomaly serve` on 127.0.0.1 and, per run, submits a
pipeline of --chunks chunks (each held 100 ms by NOMALY_FAULTS=chunk_delay_ms, so there is
something to stream) and reads its event stream (`/api/runs/{id}/events`). It prints, per run:
  - commit -> event: how long after the manifest commit (the event's committed_at_ms) each
    chunk's event reached the client (max and median over the chunks);
  - the longest gap between two events while the run was active.
Then it registers a schedule firing every minute (`* * * * *`), waits for one fire and prints
how long after its fire time the run was queued. The CPU is printed with the figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from engines import NOMALY, ROOT, free_port  # the release binary's path, a free loopback port
from run import cpu  # benchmarks/run.py: the CPU model and its vector extensions


def now_ms():
    return int(time.time() * 1000)


class Server:
    def __init__(self, work, binary):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(work, "serve.log"), "wb")
        self.token = "benchmark-token"
        env = dict(os.environ, NOMALY_FAULTS="chunk_delay_ms=100", NOMALY_TOKEN=self.token)
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(self.port), "--db", os.path.join(work, "jobs.db"),
             "--allow-root", work],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        while True:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"nomaly serve did not answer; see {self.log.name}")
            time.sleep(0.1)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json",
                                              "authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def events(self, run_id):
        """Yields (received_ms, event) from the run's stream until it finishes."""
        req = urllib.request.Request(f"{self.base}/api/runs/{run_id}/events",
                                     headers={"authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                yield now_ms(), event
                if event.get("kind") == "finished":
                    return

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def pipeline(work, name, chunks, extra=""):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'name = "{name}"\n{extra}\ninput = "tx.parquet"\noutput = "out_{name}/"\n'
                '[detect]\nalgorithm = "zscore"\ncolumns = ["f1", "f2"]\n'
                f"[run]\nchunk_rows = {20_000 // chunks}\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--nomaly", default=NOMALY, help="the binary to measure (default: release)")
    args = ap.parse_args()
    if not os.path.exists(args.nomaly):
        sys.exit(f"{args.nomaly} is missing: cargo build --release -p nomaly-cli")
    print(f"CPU: {cpu()}")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "generate.py"),
                        "--rows", "20000", "--features", "2",
                        "--out", os.path.join(work, "tx.parquet")], check=True,
                       stdout=subprocess.DEVNULL)
        server = Server(work, args.nomaly)
        try:
            for i in range(args.runs):
                p = pipeline(work, f"streamed{i}", args.chunks)
                status, run = server.request("POST", "/api/runs", {"path": p})
                assert status in (200, 201), run
                lags, received = [], []
                for at, event in server.events(run["id"]):
                    received.append(at)
                    if event.get("kind") == "chunk_committed":
                        lags.append(at - event["data"]["committed_at_ms"])
                gap = max(b - a for a, b in zip(received, received[1:]))
                print(f"run {i + 1}: {len(lags)} chunk events; commit -> event max {max(lags)} ms, "
                      f"median {statistics.median(lags)} ms; longest gap between events {gap} ms")
            p = pipeline(work, "tick", 2, 'schedule = "* * * * *"\ncatch_up = "none"')
            status, body = server.request("POST", "/api/schedules", {"path": p})
            assert status == 201, body
            print("waiting for the next minute boundary ...", flush=True)
            deadline = time.time() + 130
            while time.time() < deadline:
                _, runs = server.request("GET", "/api/runs?limit=100")
                ticks = [r for r in runs["runs"] if r["pipeline"] == "tick"]
                if ticks:
                    r = ticks[0]
                    fire = int(r["trigger"].split(":", 1)[1])
                    print(f"schedule: queued {r['submitted_ms'] - fire} ms after its fire time")
                    break
                time.sleep(0.5)
            else:
                sys.exit("the schedule did not fire within 130 s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
