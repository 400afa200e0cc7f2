#!/usr/bin/env python3
"""Writes the HDF5 example inputs from examples/data/tx.csv (run once; the files are committed):

- examples/data/tx_columns.h5: one 1-D dataset per column in group /tx (h5py), the merchant
  names as variable-length UTF-8 strings;
- examples/data/tx_pandas.h5: the numeric columns as a pandas DataFrame, to_hdf(format="fixed").

Needs h5py, tables (PyTables) and pandas: pip install h5py tables pandas
"""

import pathlib

import h5py
import pandas as pd

root = pathlib.Path(__file__).resolve().parents[2]
data = root / "examples" / "data"
df = pd.read_csv(data / "tx.csv")

with h5py.File(data / "tx_columns.h5", "w") as f:
    g = f.create_group("tx")
    g.create_dataset("id", data=df["id"].to_numpy("int64"))
    g.create_dataset("merchant", data=df["merchant"].to_list(), dtype=h5py.string_dtype("utf-8"))
    g.create_dataset("amount", data=df["amount"].to_numpy("float64"))
    g.create_dataset("latency_ms", data=df["latency_ms"].to_numpy("float64"))
    g.create_dataset("label", data=df["label"].to_numpy("int8"))

df[["id", "amount", "latency_ms", "label"]].to_hdf(
    data / "tx_pandas.h5", key="tx", format="fixed", mode="w"
)
