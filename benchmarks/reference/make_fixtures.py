"""Generate accuracy fixtures: reference anomaly scores from PyOD / scikit-learn / SciPy.

Run once (needs `pip install -r benchmarks/requirements.txt`); the JSON files it writes under
benchmarks/reference/fixtures/ are committed, and `cargo test` compares Nomaly against them
(crates/nomaly-detectors/tests/accuracy.rs): ROC-AUC within 0.01 of the reference implementation,
Spearman rank correlation >= 0.99 for the deterministic detectors, and equal scores where the
reference is deterministic (pca, mahalanobis, knn, lof, loda with Nomaly's projections, mcd with
scikit-learn's steps run from Nomaly's starting subsets).

    python3 benchmarks/reference/make_fixtures.py
"""
import json
import os

import numpy as np
from scipy import stats
from sklearn.covariance import EmpiricalCovariance
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from pyod.models.hbos import HBOS
from pyod.models.ecod import ECOD
from pyod.models.copod import COPOD
from pyod.models.iforest import IForest
from pyod.models.pca import PCA
from pyod.models.mcd import MCD
from pyod.models.knn import KNN
from pyod.models.lof import LOF
from pyod.models.loda import LODA
import pyod.models.loda as pyod_loda
import eif

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def gaussian(seed=1, n=2000, d=4, rate=0.05):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) + np.arange(d) * 3.0
    y = np.zeros(n, dtype=int)
    idx = rng.choice(n, int(n * rate), replace=False)
    X[idx] += rng.normal(size=(len(idx), d)) * 4.0 + rng.choice([-6.0, 6.0], size=(len(idx), d))
    y[idx] = 1
    return X, y


def skewed(seed=2, n=1500, d=3, rate=0.04):
    rng = np.random.default_rng(seed)
    X = rng.lognormal(mean=np.log(50.0), sigma=0.5, size=(n, d))
    y = np.zeros(n, dtype=int)
    idx = rng.choice(n, int(n * rate), replace=False)
    X[idx] *= rng.uniform(4.0, 10.0, size=(len(idx), d))
    y[idx] = 1
    return X, y


def correlated(seed=3, n=2000, d=6, rate=0.03):
    # Rows near a 2-dimensional subspace; the anomalies leave it (each feature is ordinary alone).
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    mixing = rng.normal(size=(2, d))
    X = latent @ mixing + rng.normal(scale=0.3, size=(n, d)) + np.arange(d) * 5.0
    y = np.zeros(n, dtype=int)
    idx = rng.choice(n, int(n * rate), replace=False)
    X[idx] += rng.normal(scale=2.5, size=(len(idx), d))
    y[idx] = 1
    return X, y


def clustered(seed=4, n=2000, d=5, rate=0.03):
    # Three clusters of different spreads; the anomalies lie between and around them.
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(3, d))
    which = rng.integers(0, 3, size=n)
    X = centres[which] + rng.normal(size=(n, d)) * np.array([0.5, 1.0, 2.0])[which][:, None]
    y = np.zeros(n, dtype=int)
    idx = rng.choice(n, int(n * rate), replace=False)
    X[idx] = rng.uniform(-16.0, 16.0, size=(len(idx), d))
    y[idx] = 1
    return X, y


def breast_cancer():
    # ODDS-style: all benign rows plus the first 10% malignant rows as the anomalies.
    data = load_breast_cancer()
    X, target = data.data, data.target  # target 0 = malignant, 1 = benign
    benign = np.where(target == 1)[0]
    malignant = np.where(target == 0)[0][: int(len(benign) * 0.1)]
    keep = np.sort(np.concatenate([benign, malignant]))
    return X[keep], (target[keep] == 0).astype(int)


def zscore_scores(X):
    return np.abs(stats.zscore(X, axis=0, ddof=0)).max(axis=1)


def robust_scores(X):
    med = np.median(X, axis=0)
    mad = np.median(np.abs(X - med), axis=0)
    return (np.abs(X - med) / (1.4826 * mad)).max(axis=1)


def iqr_scores(X):
    q1, q3 = np.percentile(X, 25, axis=0), np.percentile(X, 75, axis=0)
    d = np.maximum(np.maximum(q1 - X, X - q3), 0.0)
    return (d / (q3 - q1)).max(axis=1)


def pyod_scores(model, X):
    model.fit(X)
    return model.decision_scores_


MASK64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class NomalyRng:
    """crates/nomaly-detectors/src/hashing.rs's DeterministicRng (xoshiro256** seeded by SplitMix64)."""

    def __init__(self, seed):
        self.s = []
        x = seed
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            self.s.append(mix64(x))

    def next_u64(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & MASK64
        result = (rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def next_f64(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def next_below(self, n):
        return (self.next_u64() * n) >> 64


def nomaly_loda_projections(seed, d, cuts):
    """crates/nomaly-detectors/src/algorithms/loda.rs's `projections`, step for step."""
    nonzero = max(1, min(int(np.sqrt(d)), d))
    rng = NomalyRng(seed ^ 0x6C6F646100000001)
    out = []
    for _ in range(cuts):
        order = list(range(d))
        for t in range(nonzero):
            r = t + rng.next_below(d - t)
            order[t], order[r] = order[r], order[t]
        chosen = sorted(order[:nonzero])
        weights = []
        for _ in chosen:
            acc = 0.0
            for _ in range(12):
                acc += rng.next_f64()
            weights.append(acc - 6.0)
        out.append((chosen, weights))
    return out


def loda_scores(X, seed=42, cuts=100):
    """PyOD's LODA, its own code, with Nomaly's projections in place of its unseeded draws."""
    d = X.shape[1]
    proj = nomaly_loda_projections(seed, d, cuts)
    dense = np.ones((cuts, d))
    for i, (chosen, weights) in enumerate(proj):
        dense[i, chosen] = weights
    perms = iter([np.array([j for j in range(d) if j not in c] + c) for c, _ in proj])

    class Draws:
        def randn(self, *shape):
            assert shape == (cuts, d), shape
            return dense.copy()

        def permutation(self, n):
            return next(perms)

    real = pyod_loda.np.random
    pyod_loda.np.random = Draws()
    try:
        return pyod_scores(LODA(n_bins=10, n_random_cuts=cuts), X)
    finally:
        pyod_loda.np.random = real


def nomaly_sample_order(X, seed):
    """The rows in the order of Nomaly's row sample: by the seeded hash of their values' bits."""
    def bits(v):
        return 0 if v == 0.0 else int(np.float64(v).view(np.uint64))

    def row_hash(row):
        h = mix64(seed ^ 0x6E6F6D616C790001)
        for v in row:
            h = mix64(h ^ bits(v))
        return h

    keys = [(row_hash(r), tuple(bits(v) for v in r), i) for i, r in enumerate(X)]
    assert len({k[:2] for k in keys}) == len(keys), "distinct rows expected"
    return [k[2] for k in sorted(keys)]


def mcd_same_starts(X, seed=42):
    """PyOD's MCD (scikit-learn's C-steps, consistency correction and reweighting) run from the
    random h-subsets Nomaly's `mcd` draws, in Nomaly's search (30 starts, two C-steps each, the 10
    lowest determinants iterated to convergence): Nomaly's scores must equal these. scikit-learn's
    own search splits inputs over 500 rows into subsets and draws with NumPy's generator, so its
    optimum may differ (the `mcd` scores) where this one may not."""
    from scipy.linalg import pinvh
    from scipy.stats import chi2
    from sklearn.covariance import empirical_covariance
    from sklearn.covariance._robust_covariance import _c_step

    order = nomaly_sample_order(X, seed)
    X = X[order]
    n, d = X.shape
    h = int(min(np.ceil(0.5 * (n + d + 1)), n))
    rng = NomalyRng(seed ^ 0x6D63645F74726961)

    class Start:
        """Hands scikit-learn's C-step the h-subset Nomaly starts from."""

        def __init__(self, permutation):
            self.order = np.array(permutation)

        def permutation(self, m):
            return self.order

    trials = []
    for _ in range(30):
        perm = list(range(n))
        for i in range(n - 1, 0, -1):
            j = rng.next_u64() % (i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        trials.append(_c_step(X, h, Start(perm), remaining_iterations=2))
    best = sorted(trials, key=lambda t: t[2])[:10]
    refined = [_c_step(X, h, None, remaining_iterations=30, initial_estimates=(t[0], t[1])) for t in best]
    _, _, _, _, dist = min(refined, key=lambda t: t[2])
    # MinCovDet.correct_covariance and reweight_covariance
    dist = dist / (np.median(dist) / chi2(d).isf(0.5))
    mask = dist < chi2(d).isf(0.025)
    location, covariance = X[mask].mean(0), empirical_covariance(X[mask])
    centred = X - location
    scores = (centred @ pinvh(covariance) * centred).sum(1)
    out = np.empty(n)
    out[order] = scores
    return out


def eif_scores(X, seed):
    """The `eif` package's fully extended forest (Hariri et al.), scikit-learn's ψ and tree count."""
    forest = eif.iForest(X, ntrees=100, sample_size=256, ExtensionLevel=X.shape[1] - 1, seed=seed)
    return forest.compute_paths(X_in=X)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (X, y) in {
        "gaussian": gaussian(),
        "skewed": skewed(),
        "breast_cancer": breast_cancer(),
        "correlated": correlated(),
        "clustered": clustered(),
    }.items():
        scores = {
            "zscore": zscore_scores(X),
            "robust_zscore": robust_scores(X),
            "iqr": iqr_scores(X),
            "hbos": pyod_scores(HBOS(), X),
            "ecod": pyod_scores(ECOD(), X),
            "copod": pyod_scores(COPOD(), X),
            "iforest": pyod_scores(IForest(n_estimators=100, random_state=0), X),
            "pca": pyod_scores(PCA(), X),
            "mahalanobis": EmpiricalCovariance().fit(X).mahalanobis(X),
            "mcd": pyod_scores(MCD(random_state=0), X),
            "mcd_same_starts": mcd_same_starts(X),
            "knn": pyod_scores(KNN(), X),
            "lof": pyod_scores(LOF(), X),
            "loda": loda_scores(X),
            "eif": eif_scores(X, 0),
        }
        fixture = {
            "name": name,
            "source": "benchmarks/reference/make_fixtures.py",
            "columns": [X[:, j].tolist() for j in range(X.shape[1])],
            "labels": y.tolist(),
            "scores": {k: np.asarray(v, dtype=float).tolist() for k, v in scores.items()},
            "auc": {k: float(roc_auc_score(y, v)) for k, v in scores.items()},
            "eif_auc_mean_10_seeds": float(np.mean([roc_auc_score(y, eif_scores(X, s)) for s in range(10)])),
            # A single forest's AUC moves by ~0.02 with its seed on small data: compare means.
            "iforest_auc_mean_10_seeds": float(np.mean([
                roc_auc_score(y, pyod_scores(IForest(n_estimators=100, random_state=s), X)) for s in range(10)
            ])),
        }
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(fixture, f)
        print(name, X.shape, {k: round(v, 4) for k, v in fixture["auc"].items()})


if __name__ == "__main__":
    main()
