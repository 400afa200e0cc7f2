"""Times the time-series window functions against a window `avg` over the same frames, and against
their Python anchors, in one invocation (release build). Not part of CI.

    python3 benchmarks/series.py [--series 10000 --points 1000] [--repeat 3] [--reference-series 300]

The data (written once to --data, default /tmp/benchdata/series_<series>x<points>.parquet) is
time-major — every series' reading at ts 0, then at ts 1, … — as it arrives from collectors, so
every query pays the same sort by (series, ts). Each Nomaly query is `nomaly sql` aggregating the
window column (count and sum), so the figures are scan + sort + window, not a write:

- `avg_series`: avg(v) OVER (PARTITION BY series ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND
  UNBOUNDED FOLLOWING) — the frame the seasonal detector and ESD see;
- `avg_rolling`: avg(v) OVER (... ROWS BETWEEN <window> PRECEDING AND 1 PRECEDING) — the rolling
  baseline's frame.

Anchors: statsmodels STL (robust, the same options) + the residual rule, ESD by Rosner's steps, and
pandas rolling median/MAD, timed on --reference-series series and scaled to all of them.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (cpu(), run_nomaly(), build(), spread())


def generate(path, series, points, seed=7):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = None
    ts_block = max(1, 1_000_000 // series)
    for start in range(0, points, ts_block):
        ts = np.arange(start, min(points, start + ts_block))
        t = np.repeat(ts, series)
        s = np.tile(np.arange(series), len(ts))
        level = (s % 97).astype(float)
        v = (level + 0.01 * t + 5 * np.sin(2 * np.pi * t / 24) + 2 * np.sin(2 * np.pi * t / 168)
             + rng.normal(0, 1, len(t)))
        spikes = rng.random(len(t)) < 0.002
        v[spikes] += rng.choice([-8.0, 8.0], spikes.sum())
        table = pa.table({"series": s.astype(np.int64), "ts": t.astype(np.int64), "v": v})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=1_000_000)
    writer.close()


def window_sql(expr, frame="ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING"):
    over = f"OVER (PARTITION BY series ORDER BY ts {frame})" if frame else "OVER (PARTITION BY series ORDER BY ts)"
    return f"SELECT count(x), sum(CAST(x AS DOUBLE)) FROM (SELECT {expr} {over} AS x FROM t)"


def flag_sql(expr):
    """A boolean window function, counted as 0/1."""
    over = "OVER (PARTITION BY series ORDER BY ts)"
    return f"SELECT count(x), sum(CAST(x AS DOUBLE)) FROM (SELECT CAST({expr} {over} AS INT) AS x FROM t)"


def queries(window):
    rolling_frame = f"ROWS BETWEEN {window} PRECEDING AND 1 PRECEDING"
    return {
        "avg_series": window_sql("avg(v)"),
        "seasonal": window_sql("anomaly_score_seasonal(v, 'period=24')", None),
        "seasonal_auto": window_sql("anomaly_score_seasonal(v)", None),
        "seasonal_jumps": window_sql(
            "anomaly_score_seasonal(v, 'period=24, seasonal_jump=2, trend_jump=5, low_pass_jump=3')", None),
        "seasonal_plain": window_sql("anomaly_score_seasonal(v, 'period=24, robust=false')", None),
        "seasonal_fast": window_sql(
            "anomaly_score_seasonal(v, 'period=24, trend_jump=5, low_pass_jump=3, inner_iter=1, outer_iter=5')",
            None),
        "esd": flag_sql("is_anomaly_esd(v)"),
        "esd_seasonal": flag_sql("is_anomaly_esd(v, 'period=24')"),
        "avg_rolling": window_sql("avg(v)", rolling_frame),
        "rolling": window_sql(f"anomaly_score_rolling(v, 'window={window}')", None),
    }


def reference_seconds(path, n_series, window):
    import pandas as pd
    import pyarrow.parquet as pq
    from scipy import stats
    from statsmodels.tsa.seasonal import STL

    table = pq.read_table(path, filters=[("series", "<", n_series)])
    df = table.to_pandas().sort_values(["series", "ts"])
    groups = [g["v"].to_numpy() for _, g in df.groupby("series")]
    out = {}

    start = time.perf_counter()
    for y in groups:
        r = STL(y, period=24, robust=True).fit().resid
        med = np.median(r)
        np.abs(r - med) / (1.4826 * np.median(np.abs(r - med)))
    out["seasonal"] = (time.perf_counter() - start) / len(groups)

    start = time.perf_counter()
    for y in groups:
        x = y.copy()
        n = len(x)
        for i in range(1, int(0.1 * n) + 1):
            m = n - i + 1
            dev = np.abs(x - x.mean())
            j = int(np.argmax(dev))
            dev[j] / x.std(ddof=1)
            stats.t(m - 2).isf(0.05 / (2 * m))
            x = np.delete(x, j)
    out["esd"] = (time.perf_counter() - start) / len(groups)

    start = time.perf_counter()
    for y in groups:
        s = pd.Series(y).shift(1).rolling(window, min_periods=window)
        med = s.median()
        mad = s.apply(lambda a: np.median(np.abs(a - np.median(a))), raw=True)
        np.abs(y - med) / (1.4826 * mad)
    out["rolling"] = (time.perf_counter() - start) / len(groups)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--points", type=int, default=1_000)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--reference-series", type=int, default=300)
    p.add_argument("--only", default=None, help="comma-separated query names")
    p.add_argument("--data", default=None)
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    data = args.data or f"/tmp/benchdata/series_{args.series}x{args.points}.parquet"
    if not os.path.exists(data):
        generate(data, args.series, args.points)
    if not args.no_build:
        run.build()
    print(f"CPU: {run.cpu()}")
    print(f"data: {data} ({args.series} series x {args.points} points)")
    qs = queries(args.window)
    if args.only:
        qs = {k: v for k, v in qs.items() if k in args.only.split(",")}
    times = {k: [] for k in qs}
    rss = {}
    for _ in range(args.repeat):
        for name, sql in qs.items():
            seconds, peak = run.run_nomaly(data, sql)
            times[name].append(seconds)
            rss[name] = max(rss.get(name, 0), peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = {"seasonal": "avg_series", "seasonal_auto": "avg_series", "seasonal_jumps": "avg_series",
            "seasonal_plain": "avg_series", "seasonal_fast": "avg_series", "esd": "avg_series", "esd_seasonal": "avg_series",
            "rolling": "avg_rolling"}
    refs = {}
    if args.reference_series > 0:
        per_series = reference_seconds(data, args.reference_series, args.window)
        refs = {k: v * args.series for k, v in per_series.items()}
    print(f"{'query':16} {'median s':>9} {'spread':>7} {'peak MiB':>9} {'vs window avg':>14} {'anchor s':>9} {'anchor/ours':>11}")
    for name in qs:
        ratio = med[name] / med[base[name]] if base.get(name) in med else None
        anchor = refs.get(name.split("_")[0]) if name in ("seasonal", "esd", "rolling") else None
        print(f"{name:16} {med[name]:9.2f} {run.spread(times[name]):7.0%} {rss[name] / 2**20:9.0f} "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>14} {(f'{anchor:.1f}' if anchor else '-'):>9} "
              f"{(f'{anchor / med[name]:.1f}x' if anchor else '-'):>11}")
    if refs:
        print(f"anchors timed on {args.reference_series} series and scaled to {args.series}")


if __name__ == "__main__":
    main()
