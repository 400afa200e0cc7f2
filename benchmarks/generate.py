"""Seeded benchmark data: N rows x d features with labelled injected anomalies.

    python3 benchmarks/generate.py --rows 10000000 --features 8 --out benchmarks/data/tx_10m.parquet
    python3 benchmarks/generate.py --rows 100000 --format csv --out benchmarks/data/tx_100k.csv

Columns: id (int64), f1..fd (float64), label (int8: 1 = injected anomaly). Normal rows are a mix of
correlated Gaussian clusters; anomalies (--rate, default 1%) are scattered uniformly over an
enlarged bounding box. Same seed, same bytes.
"""
import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def batches(rows, d, rate, seed, batch_rows=1_000_000):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(3, d))
    scales = rng.uniform(0.5, 2.0, size=(3, d))
    start = 0
    while start < rows:
        n = min(batch_rows, rows - start)
        cluster = rng.integers(0, 3, size=n)
        x = rng.normal(size=(n, d)) * scales[cluster] + centres[cluster]
        x[:, 1:] += 0.5 * x[:, :1]  # some correlation
        label = (rng.random(n) < rate).astype(np.int8)
        k = int(label.sum())
        lo, hi = centres.min(axis=0) - 12.0, centres.max(axis=0) + 12.0
        x[label == 1] = rng.uniform(lo, hi, size=(k, d))
        cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        for j in range(d):
            cols[f"f{j + 1}"] = pa.array(x[:, j])
        cols["label"] = pa.array(label)
        yield pa.table(cols)
        start += n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--format", choices=["parquet", "csv"], default=None)
    p.add_argument("--row-group", type=int, default=1_000_000)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    fmt = a.format or ("csv" if a.out.endswith(".csv") else "parquet")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    writer = None
    for t in batches(a.rows, a.features, a.rate, a.seed):
        if fmt == "parquet":
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
            writer.write_table(t, row_group_size=a.row_group)
        else:
            if writer is None:
                writer = pacsv.CSVWriter(tmp, t.schema)
            writer.write_table(t)
    writer.close()
    os.replace(tmp, a.out)
    print(f"wrote {a.rows} rows x {a.features} features to {a.out}")


if __name__ == "__main__":
    main()
