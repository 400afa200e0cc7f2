"""Generate time-series accuracy fixtures: statsmodels STL residuals, Rosner's generalized ESD
(SciPy's t quantiles) and pandas rolling medians on series with a trend, two seasonalities and
injected spikes, level shifts and seasonal anomalies.

Run once (needs `pip install -r benchmarks/requirements.txt`); the JSON files it writes under
benchmarks/reference/fixtures/series_*.json are committed, and `cargo test -p nomaly-detectors
--test accuracy` compares Nomaly's series detectors against them.

    python3 benchmarks/reference/make_series_fixtures.py
"""
import json
import os

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.tsa.seasonal import STL

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def hourly(seed=11, n=1008):
    """Trend + a daily (24) and a weekly (168) wave + noise; spikes, a level shift, an odd day."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 0.01 * t + 5 * np.sin(2 * np.pi * t / 24) + 3 * np.sin(2 * np.pi * t / 168) + rng.normal(0, 1, n)
    labels = np.zeros(n, dtype=int)
    for i in rng.choice(np.arange(30, n - 30), 8, replace=False):
        y[i] += rng.choice([-1, 1]) * rng.uniform(6, 9)
        labels[i] = 1
    y[600:640] += 8.0  # a level shift; its first hours are the anomaly
    labels[600:606] = 1
    day = slice(24 * 30, 24 * 31)  # one day whose daily wave is upside down
    y[day] -= 10 * np.sin(2 * np.pi * t[day] / 24)
    labels[day] = (np.abs(np.sin(2 * np.pi * t[day] / 24)) > 0.5).astype(int)
    gaps = [100, 101, 102, 500]
    return y, labels, gaps, 24


def monthly(seed=12, n=600):
    """A period-12 wave whose amplitude grows, a quadratic trend, heavy-tailed noise, spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 1e-4 * t**2 + (2 + t / 200) * np.cos(2 * np.pi * t / 12) + rng.standard_t(5, n) * 0.5
    labels = np.zeros(n, dtype=int)
    for i in rng.choice(np.arange(n), 12, replace=False):
        y[i] += rng.choice([-1, 1]) * rng.uniform(3, 5)
        labels[i] = 1
    return y, labels, [], 12


def weekly(seed=13, n=420):
    """A period-7 pattern of a daily count (Poisson), a drop in one week, spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = 50 + 20 * (t % 7 >= 5) + 0.05 * t
    y = rng.poisson(base).astype(float)
    labels = np.zeros(n, dtype=int)
    for i in rng.choice(np.arange(n), 6, replace=False):
        y[i] *= 2.0
        labels[i] = 1
    y[200:207] *= 0.4
    labels[200:207] = 1
    return y, labels, [50], 7


def filled(y, gaps):
    """Missing values linearly interpolated between their neighbours (Nomaly's rule)."""
    y = y.copy()
    y[gaps] = np.nan
    ok = ~np.isnan(y)
    idx = np.arange(len(y))
    return np.interp(idx, idx[ok], y[ok]), y


def robust_z(r, valid):
    med = np.median(r[valid])
    mad = np.median(np.abs(r[valid] - med))
    z = np.abs(r - med) / (1.4826 * mad)
    z[~valid] = np.nan
    return z


def stl_scores(y, gaps, period, fit=None, **kw):
    y_filled, y_gappy = filled(y, gaps)
    res = STL(y_filled, period=period, **kw).fit(**(fit or {}))
    return robust_z(np.asarray(res.resid), ~np.isnan(y_gappy)), np.asarray(res.resid)


def rosner_esd(x, max_anoms, alpha):
    """Rosner (1983), one step at a time on the values left (NumPy + SciPy)."""
    idx = np.flatnonzero(~np.isnan(x))
    vals = x[idx].copy()
    n = len(vals)
    r = min(int(np.floor(max_anoms * n)), n - 2)
    removed, stat, crit = [], [], []
    for i in range(1, r + 1):
        m = n - i + 1
        dev = np.abs(vals - vals.mean())
        j = int(np.argmax(dev))
        stat.append(float(dev[j] / vals.std(ddof=1)))
        tq = stats.t(m - 2).isf(alpha / (2 * m))
        crit.append(float((m - 1) * tq / np.sqrt((m - 2 + tq * tq) * m)))
        removed.append(int(idx[j]))
        idx, vals = np.delete(idx, j), np.delete(vals, j)
    k = max([i + 1 for i in range(r) if stat[i] > crit[i]], default=0)
    flags = np.zeros(len(x), dtype=int)
    flags[removed[:k]] = 1
    return flags, stat, crit, removed


def rolling_scores(y, gaps, window, warmup):
    _, y_gappy = filled(y, gaps)
    s = pd.Series(y_gappy).shift(1)
    roll = s.rolling(window, min_periods=warmup)
    med = roll.median()
    mad = roll.apply(lambda a: np.median(np.abs(a[~np.isnan(a)] - np.median(a[~np.isnan(a)]))), raw=True)
    return (np.abs(y_gappy - med) / (1.4826 * mad)).to_numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (y, labels, gaps, period) in {
        "hourly": hourly(),
        "monthly": monthly(),
        "weekly": weekly(),
    }.items():
        values = y.copy()
        values[gaps] = np.nan
        robust, resid = stl_scores(y, gaps, period, robust=True)
        plain, _ = stl_scores(y, gaps, period, robust=False)
        jumped, _ = stl_scores(y, gaps, period, robust=True, seasonal_jump=2, trend_jump=5, low_pass_jump=3)
        # R's stl() style: jumps of a tenth of each smoother, one inner loop, fewer outer ones.
        fast, _ = stl_scores(y, gaps, period, fit={"inner_iter": 1, "outer_iter": 5}, robust=True,
                             seasonal_jump=1, trend_jump=5, low_pass_jump=3)
        residual = resid - np.median(resid)
        flags, stat, crit, removed = rosner_esd(np.where(np.isnan(values), np.nan, residual), 0.1, 0.05)
        rolling = rolling_scores(y, gaps, 3 * period, period)
        valid = ~np.isnan(values)
        auc = lambda s: float(roc_auc_score(labels[valid], np.nan_to_num(s[valid], nan=-1.0)))
        fixture = {
            "name": name,
            "source": "benchmarks/reference/make_series_fixtures.py",
            "period": period,
            "values": [None if np.isnan(v) else float(v) for v in values],
            "labels": labels.tolist(),
            "stl_robust": [None if np.isnan(v) else float(v) for v in robust],
            "stl_plain": [None if np.isnan(v) else float(v) for v in plain],
            "stl_jumps": [None if np.isnan(v) else float(v) for v in jumped],
            "stl_fast": [None if np.isnan(v) else float(v) for v in fast],
            "stl_residual": [float(v) for v in resid],
            "esd_on_residual": {"flags": flags.tolist(), "statistic": stat, "critical": crit, "removed": removed},
            "rolling": {"window": 3 * period, "warmup": period,
                        "scores": [None if np.isnan(v) else float(v) for v in rolling]},
            "auc": {"stl_robust": auc(robust), "stl_fast": auc(fast), "stl_plain": auc(plain), "rolling": auc(rolling),
                    "esd": auc(flags.astype(float))},
        }
        with open(os.path.join(OUT, f"series_{name}.json"), "w") as f:
            json.dump(fixture, f)
        print(name, len(y), {k: round(v, 4) for k, v in fixture["auc"].items()}, "esd flagged", int(flags.sum()))


if __name__ == "__main__":
    main()
