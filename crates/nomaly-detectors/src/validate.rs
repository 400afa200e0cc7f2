//! A model decoded from bytes is checked before anything scores with it (SECURITY.md, "a file or
//! model someone else wrote").
//!
//! A model can arrive in a Parquet file written by someone else. Decoding gives well-typed values,
//! but the scoring code relies on more: a value per feature, finite numbers, sorted histogram
//! edges and ECDF values, consistent bucket counts (a count that went backwards would underflow),
//! and trees whose children point strictly forward with their stated depth true (the walks take
//! exactly `depth` steps, so a false depth would hang a scan or read out of bounds). Each broken
//! rule is a [`CorruptModel`](crate::DetectorError::CorruptModel) error naming it, never a panic
//! or a hang.

use crate::algorithms::ecdf::EcdfModel;
use crate::algorithms::hbos::HbosModel;
use crate::algorithms::iforest::IsolationForestModel;
use crate::algorithms::moments::CentreScaleModel;
use crate::algorithms::pca::PcaModel;
use crate::model::{Model, ModelBody};
use crate::params::Algorithm;
use crate::quantile::{CumulativeCounts, Ecdf};

/// The most features a model may score (wider inputs are not tables anyone scores).
pub const MAX_FEATURES: usize = 1 << 16;

type Checked = std::result::Result<(), String>;

/// Checks a decoded model; the error says which rule it breaks.
pub fn check_model(model: &Model) -> Checked {
    let width = model.n_features;
    if width == 0 || width > MAX_FEATURES {
        return Err(format!(
            "{width} features (a model has 1 to {MAX_FEATURES})"
        ));
    }
    // A NaN threshold is what a fit on no rows gives: nothing is flagged, nothing breaks.
    let body_fits = matches!(
        (model.params.algorithm, &model.body),
        (
            Algorithm::ZScore | Algorithm::RobustZScore | Algorithm::Iqr,
            ModelBody::CentreScale(_)
        ) | (Algorithm::Hbos, ModelBody::Hbos(_))
            | (Algorithm::Ecod | Algorithm::Copod, ModelBody::Ecdf(_))
            | (Algorithm::IsolationForest, ModelBody::IsolationForest(_))
            | (Algorithm::Pca, ModelBody::Pca(_))
            | (
                Algorithm::Mahalanobis | Algorithm::Mcd,
                ModelBody::Mahalanobis(_)
            )
            | (Algorithm::Knn, ModelBody::Knn(_))
            | (Algorithm::Lof, ModelBody::Lof(_))
            | (Algorithm::Loda, ModelBody::Loda(_))
            | (Algorithm::Eif, ModelBody::Eif(_))
    );
    if !model.categories.is_empty() {
        if model.categories.len() != width {
            return Err(format!(
                "{} category tables for {width} features",
                model.categories.len()
            ));
        }
        if !model.params.algorithm.takes_categorical() {
            return Err(format!(
                "{} has no text features, but the model has category tables",
                model.params.algorithm.name()
            ));
        }
        for table in model.categories.iter().flatten() {
            table.validate()?;
        }
    }
    if !body_fits {
        return Err(format!(
            "the body does not belong to algorithm {}",
            model.params.algorithm.name()
        ));
    }
    match &model.body {
        ModelBody::CentreScale(m) => check_centre_scale(m, width),
        ModelBody::Hbos(m) => check_hbos(m, width),
        ModelBody::Ecdf(m) => check_ecdf(m, width),
        ModelBody::IsolationForest(m) => m.validate(width),
        ModelBody::Pca(m) => check_pca(m, width),
        ModelBody::Knn(m) => m.validate(width),
        ModelBody::Lof(m) => m.validate(width),
        ModelBody::Loda(m) => m.validate(width),
        ModelBody::Eif(m) => m.validate(width),
        ModelBody::Mahalanobis(m) => {
            per_feature("location values", m.location.len(), width)?;
            if m.precision.len() != width * width {
                return Err(format!(
                    "a precision of {} values for {width} features",
                    m.precision.len()
                ));
            }
            if !m.location.iter().chain(&m.precision).all(|x| x.is_finite()) {
                return Err("a location or precision value is not a finite number".into());
            }
            Ok(())
        }
    }
}

/// Components as long as the features, no more of them than features, finite numbers (a fit on
/// no rows has none), and weights that divide.
fn check_pca(m: &PcaModel, width: usize) -> Checked {
    per_feature("centres", m.centre.len(), width)?;
    per_feature("scales", m.scale.len(), width)?;
    if m.components.len() > width || m.variance_ratios.len() > width {
        return Err(format!(
            "{} components for {width} features",
            m.components.len()
        ));
    }
    if m.weights.len() != m.components.len() {
        return Err(format!(
            "{} weights for {} components",
            m.weights.len(),
            m.components.len()
        ));
    }
    if let Some(k) = m.components.iter().position(|c| c.len() != width) {
        return Err(format!("component {k} is not {width} long"));
    }
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    if !finite(&m.scale) || m.scale.contains(&0.0) || !finite(&m.centre) {
        return Err("a centre or scale is not a finite number (or a scale is 0)".into());
    }
    if !m.weights.iter().all(|w| w.is_finite() && *w > 0.0)
        || !m.components.iter().all(|c| finite(c))
    {
        return Err("a component or its weight is not a finite number (or a weight ≤ 0)".into());
    }
    Ok(())
}

fn per_feature(what: &str, len: usize, width: usize) -> Checked {
    if len == width {
        Ok(())
    } else {
        Err(format!("{len} {what} for {width} features"))
    }
}

/// NaN centres are what a fit on no rows gives (its scores are NaN, as they should be).
fn check_centre_scale(m: &CentreScaleModel, width: usize) -> Checked {
    for (what, v) in [
        ("centres", &m.centre),
        ("upper centres", &m.upper),
        ("scales", &m.scale),
    ] {
        per_feature(what, v.len(), width)?;
    }
    Ok(())
}

fn check_hbos(m: &HbosModel, width: usize) -> Checked {
    per_feature("edge lists", m.edges.len(), width)?;
    per_feature("density lists", m.log_density.len(), width)?;
    if m.tol.is_nan() {
        return Err("tol is NaN".into());
    }
    for (j, (edges, density)) in m.edges.iter().zip(&m.log_density).enumerate() {
        if density.is_empty() || edges.len() != density.len() + 1 {
            return Err(format!(
                "feature {j}: {} edges for {} bins (edges are bins + 1)",
                edges.len(),
                density.len()
            ));
        }
        // NaN edges are a fit on no rows; numbers out of order are not a fit at all.
        if edges.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("feature {j}: the edges are not sorted"));
        }
    }
    Ok(())
}

fn check_ecdf(m: &EcdfModel, width: usize) -> Checked {
    per_feature("ECDFs", m.ecdfs.len(), width)?;
    per_feature("skew signs", m.skew_sign.len(), width)?;
    if let Some(j) = m.skew_sign.iter().position(|s| !(-1..=1).contains(s)) {
        return Err(format!("feature {j}: a skew sign outside -1, 0, 1"));
    }
    for (j, e) in m.ecdfs.iter().enumerate() {
        match e {
            Ecdf::Exact { sorted } => {
                if sorted.iter().any(|v| v.is_nan()) || sorted.windows(2).any(|w| w[0] > w[1]) {
                    return Err(format!(
                        "feature {j}: the ECDF values are not sorted numbers"
                    ));
                }
            }
            Ecdf::Buckets {
                n,
                zero,
                positive,
                negative,
            } => {
                let total = |c: &CumulativeCounts| *c.cumulative.last().unwrap_or(&0);
                let counted = total(positive)
                    .checked_add(total(negative))
                    .and_then(|c| c.checked_add(*zero));
                if !consistent(positive) || !consistent(negative) || counted != Some(*n) {
                    return Err(format!(
                        "feature {j}: the ECDF bucket counts do not add up to its {n} values"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Cumulative counts start at 0, never decrease, and their buckets fit the key range.
fn consistent(c: &CumulativeCounts) -> bool {
    c.cumulative.first().is_none_or(|&v| v == 0)
        && c.cumulative.windows(2).all(|w| w[0] <= w[1])
        && u32::try_from(c.cumulative.len())
            .ok()
            .and_then(|n| c.offset.checked_add(n))
            .is_some()
}

impl IsolationForestModel {
    /// Checks the structure scoring relies on: at least one tree; per tree equal node and leaf
    /// tables, children strictly after their parent and inside the tree, features inside the
    /// width, thresholds not NaN, finite leaf values, and a stated depth that is the true one.
    pub fn validate(&self, width: usize) -> Checked {
        if self.trees.is_empty() {
            return Err("a forest with no tree".into());
        }
        if self.normaliser.is_nan() {
            return Err("the normaliser is NaN".into());
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let len = tree.nodes.len();
            if tree.leaf_value.len() != len || len == 0 {
                return Err(format!("tree {t}: node and leaf tables differ in length"));
            }
            if let Some(i) = tree.leaf_value.iter().position(|v| v.is_nan()) {
                return Err(format!("tree {t}: leaf value {i} is NaN"));
            }
            // Depth of each node, filled as parents are met (children are strictly later).
            let mut depth = vec![usize::MAX; len];
            depth[0] = 0;
            let mut deepest = 0;
            for (i, node) in tree.nodes.iter().enumerate() {
                let at = depth[i];
                if at == usize::MAX {
                    return Err(format!("tree {t}: node {i} is not reachable from the root"));
                }
                if node.child as usize == i {
                    deepest = deepest.max(at);
                    continue;
                }
                let child = node.child as usize;
                if child <= i || child + 1 >= len || node.feature as usize >= width {
                    return Err(format!("tree {t}: node {i} points outside the tree"));
                }
                if node.threshold.is_nan() {
                    return Err(format!("tree {t}: node {i} has a NaN threshold"));
                }
                for c in [child, child + 1] {
                    if depth[c] != usize::MAX {
                        return Err(format!("tree {t}: node {c} has two parents"));
                    }
                    depth[c] = at + 1;
                }
            }
            if tree.depth != deepest {
                return Err(format!(
                    "tree {t}: stated depth {} but its deepest leaf is at {deepest}",
                    tree.depth
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DetectorParams, FitState};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    fn fitted(alg: Algorithm, rows: usize) -> Model {
        let cols: Vec<ArrayRef> = (0..3)
            .map(|j| {
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| ((i * 7 + j * 13) % 101) as f64 - 50.0),
                )) as ArrayRef
            })
            .collect();
        let mut fit = FitState::new(DetectorParams::new(alg), 3);
        if rows > 0 {
            fit.update(&cols).unwrap();
        }
        fit.finish()
    }

    #[test]
    fn fitted_models_pass_and_broken_ones_are_named() {
        for alg in Algorithm::ALL {
            for rows in [0, 1, 2_000] {
                let m = fitted(alg, rows);
                let back = Model::from_bytes(&m.to_bytes());
                assert!(back.is_ok(), "{} on {rows} rows: {back:?}", alg.name());
            }
        }
        let mut m = fitted(Algorithm::IsolationForest, 2_000);
        let ModelBody::IsolationForest(f) = &mut m.body else {
            unreachable!()
        };
        let depth = f.trees[0].depth;
        f.trees[0].depth = depth + 1_000_000;
        assert!(check_model(&m).unwrap_err().contains("stated depth"));
        let ModelBody::IsolationForest(f) = &mut m.body else {
            unreachable!()
        };
        f.trees[0].depth = depth;
        // A child pointing back at the root: a cycle.
        let last_internal = f.trees[0].nodes.iter().rposition(|n| n.child != 0).unwrap();
        let mut cyclic = m.clone();
        let ModelBody::IsolationForest(c) = &mut cyclic.body else {
            unreachable!()
        };
        if c.trees[0].nodes[last_internal].child as usize != last_internal {
            c.trees[0].nodes[last_internal].child = 0;
            assert!(check_model(&cyclic).unwrap_err().contains("points outside"));
        }
        let mut h = fitted(Algorithm::Hbos, 2_000);
        let ModelBody::Hbos(b) = &mut h.body else {
            unreachable!()
        };
        b.edges[1].reverse();
        assert!(check_model(&h).unwrap_err().contains("not sorted"));
        let ModelBody::Hbos(b) = &mut h.body else {
            unreachable!()
        };
        b.edges[1].pop();
        assert!(check_model(&h).unwrap_err().contains("edges for"));
        let mut e = fitted(Algorithm::Ecod, 2_000);
        let ModelBody::Ecdf(x) = &mut e.body else {
            unreachable!()
        };
        x.skew_sign.push(5);
        assert!(check_model(&e).unwrap_err().contains("skew signs"));
        let mut k = fitted(Algorithm::Knn, 2_000);
        let ModelBody::Knn(t) = &mut k.body else {
            unreachable!()
        };
        t.k = usize::MAX;
        assert!(check_model(&k).unwrap_err().contains("neighbour count"));
        let ModelBody::Knn(t) = &mut k.body else {
            unreachable!()
        };
        t.k = 5;
        t.weights[3] = u64::MAX;
        assert!(check_model(&k).unwrap_err().contains("weight"));
        let ModelBody::Knn(t) = &mut k.body else {
            unreachable!()
        };
        t.weights[3] = 1;
        // A tree that lies about its split: a query would skip the half holding the neighbour.
        t.split_values[0] += 1e9;
        assert!(check_model(&k).unwrap_err().contains("not split"));
        let mut z = fitted(Algorithm::ZScore, 10);
        z.n_features = 0;
        assert!(check_model(&z).is_err());
        z.n_features = 3;
        z.params.algorithm = Algorithm::Hbos;
        assert!(check_model(&z).unwrap_err().contains("does not belong"));
    }
}
