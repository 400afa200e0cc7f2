//! Categorical (text) features: `hbos`, `ecod` and `copod` score them by frequency, `iforest` and
//! `eif` split on them.
//!
//! A text value becomes its *code*: a 52-bit hash of its UTF-8 bytes, an exact integer in an f64,
//! so it travels through the row sample and the scoring columns like any number and is the same on
//! every machine. The fit counts rows per code exactly (a map merged by addition: the same counts
//! for any partitioning), at most [`MAX_CATEGORIES`] distinct values per feature. A feature's term
//! for a row is then a function of its category's count `n_c` among the `n` fitted rows:
//!
//! - hbos: −log2(n_c / n + alpha) — the histogram of a categorical feature is its category
//!   frequencies (Goldstein & Dengel), a bin of width 1 each;
//! - ecod, copod: −ln(p), p = the share of fitted rows whose category is at most as frequent as
//!   this one (Σ n_k over n_k ≤ n_c, over n) — the tail probability of the category's rarity.
//!
//! - iforest: a split on a text feature cuts the codes — a random order of the categories, fixed by
//!   their hashes — at a uniform point between the node's smallest and largest, sending a random
//!   set of categories to each side. The many rows of a frequent category share one value and are
//!   never separated, so they sit deep; a rare category is cut off in a few splits. An unseen
//!   category goes where its code falls (often alone, in a gap: a short path, a high score).
//! - eif: a text feature enters each hyperplane at its category's *place* in that plane, a hash of
//!   the plane's weight and the code in [0, 1) ([`category_place`]) — a random order of the
//!   categories drawn anew per node, as isotree's random coefficient per category and split — its
//!   weight multiplied by the median range of the numeric features so a place counts about as
//!   much as a number. A frequent category's rows share one place in every plane and sit deep; a
//!   rare or unseen one lands apart in some plane and is cut off early.
//!
//! For the frequency scores, a category the fit never saw scores as the rarest possible: hbos as an empty bin
//! (−log2(alpha)), ecod/copod with p = 1 / (n + 1). NULL follows the missing-value rule of every
//! feature: the row is skipped by the fit and scores NULL.

use crate::error::{DetectorError, Result};
use crate::hashing::mix64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Most distinct values a categorical feature may have (per fit).
pub const MAX_CATEGORIES: usize = 65_536;

/// Where a category sits on a text feature's axis in one `eif` plane: a hash of the plane's weight
/// for the feature (a random number drawn per node) and the category's code, in [0, 1). Each plane
/// so places the categories in its own random order, as isotree gives each category a random
/// coefficient per split; the weight is in the model, so scoring finds the same places.
pub fn category_place(weight: f64, code: f64) -> f64 {
    category_place_salted(category_salt(weight), code)
}

/// The part of [`category_place`] that depends on the plane only, for a walk to keep per node.
pub fn category_salt(weight: f64) -> u64 {
    mix64(weight.to_bits())
}

/// [`category_place`] from the plane's salt.
#[inline]
pub fn category_place_salted(salt: u64, code: f64) -> f64 {
    (mix64(salt ^ code.to_bits()) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The code of a text value: 52 bits of a hash of its bytes, as an exactly representable f64.
pub fn category_code(text: &str) -> f64 {
    let mut h = mix64(0x6361_7465_676f_7279 ^ text.len() as u64);
    for chunk in text.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    (h >> 12) as f64
}

/// Exact row counts per code, merged by addition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryCounts {
    counts: BTreeMap<u64, u64>,
}

impl CategoryCounts {
    /// Counts the valid rows' codes of feature `index` (1-based, for the error).
    pub fn add(&mut self, index: usize, codes: &[f64], valid: &[bool]) -> Result<()> {
        for (code, ok) in codes.iter().zip(valid) {
            if *ok {
                *self.counts.entry(*code as u64).or_default() += 1;
            }
        }
        self.check(index)
    }

    pub fn merge(&mut self, index: usize, other: &CategoryCounts) -> Result<()> {
        for (code, n) in &other.counts {
            *self.counts.entry(*code).or_default() += n;
        }
        self.check(index)
    }

    fn check(&self, index: usize) -> Result<()> {
        if self.counts.len() > MAX_CATEGORIES {
            return Err(DetectorError::TooManyCategories {
                index,
                limit: MAX_CATEGORIES,
            });
        }
        Ok(())
    }

    /// The frozen table.
    pub fn table(&self) -> CategoryTable {
        CategoryTable {
            codes: self.counts.keys().map(|c| *c as f64).collect(),
            counts: self.counts.values().copied().collect(),
            terms: OnceLock::new(),
        }
    }
}

/// A fitted categorical feature: its codes in increasing order and their row counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CategoryTable {
    pub codes: Vec<f64>,
    pub counts: Vec<u64>,
    /// The terms of each category and of an unseen one, built on first use: a model scores many
    /// batches, and a table may hold 65,536 categories.
    #[serde(skip)]
    terms: OnceLock<(CategoryTerm, Vec<f64>, f64)>,
}

impl PartialEq for CategoryTable {
    fn eq(&self, other: &Self) -> bool {
        self.codes == other.codes && self.counts == other.counts
    }
}

/// How a detector turns a category's count into a term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CategoryTerm {
    /// hbos with its `alpha`.
    Histogram { alpha: f64 },
    /// ecod, copod.
    TailShare,
}

impl CategoryTable {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The term of each category (in `codes` order) and of an unseen one.
    fn category_terms(&self, kind: CategoryTerm) -> (Vec<f64>, f64) {
        let n = self.total() as f64;
        match kind {
            CategoryTerm::Histogram { alpha } => (
                self.counts
                    .iter()
                    .map(|&c| -libm::log2(c as f64 / n + alpha))
                    .collect(),
                -libm::log2(alpha),
            ),
            CategoryTerm::TailShare => {
                // Rows in categories at most as frequent as each count, by count.
                let mut by_count: Vec<u64> = self.counts.clone();
                by_count.sort_unstable();
                let mut at_most: BTreeMap<u64, u64> = BTreeMap::new();
                let mut running = 0u64;
                for c in by_count {
                    running += c;
                    at_most.insert(c, running);
                }
                (
                    self.counts
                        .iter()
                        .map(|c| -libm::log(at_most[c] as f64 / n))
                        .collect(),
                    -libm::log(1.0 / (n + 1.0)),
                )
            }
        }
    }

    /// Writes the term of each code in `col` to `out`. A model's feature always asks for one kind,
    /// so its terms are built once per table (another kind is computed afresh).
    pub fn terms(&self, kind: CategoryTerm, col: &[f64], out: &mut [f64]) {
        let cached = self.terms.get_or_init(|| {
            let (terms, unseen) = self.category_terms(kind);
            (kind, terms, unseen)
        });
        let fresh;
        let (terms, unseen) = if cached.0 == kind {
            (&cached.1, cached.2)
        } else {
            fresh = self.category_terms(kind);
            (&fresh.0, fresh.1)
        };
        for (o, code) in out.iter_mut().zip(col) {
            *o = match self.codes.binary_search_by(|c| c.total_cmp(code)) {
                Ok(i) => terms[i],
                Err(_) => unseen,
            };
        }
    }

    /// Why a table read from a model file cannot be used, if it cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.codes.len() != self.counts.len() {
            return Err("a category table has codes and counts of different lengths".into());
        }
        if self.codes.len() > MAX_CATEGORIES {
            return Err(format!(
                "a category table has more than {MAX_CATEGORIES} categories"
            ));
        }
        if self.counts.contains(&0) {
            return Err("a category table counts a category zero times".into());
        }
        let ok = self
            .codes
            .iter()
            .all(|c| c.fract() == 0.0 && *c >= 0.0 && *c < (1u64 << 52) as f64)
            && self.codes.windows(2).all(|w| w[0] < w[1]);
        if !ok {
            return Err("a category table's codes are not increasing 52-bit integers".into());
        }
        self.counts
            .iter()
            .try_fold(0u64, |a, c| a.checked_add(*c))
            .map(|_| ())
            .ok_or_else(|| "a category table's counts overflow".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_exact_integers_and_tell_values_apart() {
        let a = category_code("DE");
        assert_eq!(a, category_code("DE"));
        assert_ne!(a, category_code("FR"));
        assert_ne!(category_code(""), category_code("\0"));
        assert_ne!(category_code("abcdefgh"), category_code("abcdefgh\0"));
        assert!(a.fract() == 0.0 && a < 2f64.powi(52));
    }

    fn table(counts: &[(&str, u64)]) -> CategoryTable {
        let mut c = CategoryCounts::default();
        for (name, n) in counts {
            let codes = vec![category_code(name); *n as usize];
            c.add(1, &codes, &vec![true; *n as usize]).unwrap();
        }
        c.table()
    }

    #[test]
    fn histogram_and_tail_terms() {
        let t = table(&[("a", 6), ("b", 3), ("c", 1)]);
        let col = [
            category_code("a"),
            category_code("b"),
            category_code("c"),
            category_code("zz"),
        ];
        let mut out = [0.0; 4];
        t.terms(CategoryTerm::Histogram { alpha: 0.1 }, &col, &mut out);
        let want = [
            -(0.7f64).log2(),
            -(0.4f64).log2(),
            -(0.2f64).log2(),
            -(0.1f64).log2(),
        ];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-15, "{out:?}");
        }
        t.terms(CategoryTerm::TailShare, &col, &mut out);
        // a: all 10 rows are in categories at most as frequent; b: 4; c: 1; unseen: 1/11.
        let want = [0.0, -(0.4f64).ln(), -(0.1f64).ln(), (11.0f64).ln()];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-15, "{out:?}");
        }
    }

    #[test]
    fn counts_merge_in_any_order_and_are_bounded() {
        let codes: Vec<f64> = ["x", "y", "x", "z", "y", "x"]
            .iter()
            .map(|s| category_code(s))
            .collect();
        let valid = [true, true, false, true, true, true];
        let mut whole = CategoryCounts::default();
        whole.add(1, &codes, &valid).unwrap();
        let (mut a, mut b) = (CategoryCounts::default(), CategoryCounts::default());
        a.add(1, &codes[3..], &valid[3..]).unwrap();
        b.add(1, &codes[..3], &valid[..3]).unwrap();
        a.merge(1, &b).unwrap();
        assert_eq!(a, whole);
        assert_eq!(whole.table().total(), 5);
        let many: Vec<f64> = (0..=MAX_CATEGORIES)
            .map(|i| category_code(&i.to_string()))
            .collect();
        let err = CategoryCounts::default()
            .add(3, &many, &vec![true; many.len()])
            .unwrap_err();
        assert!(err.to_string().contains("feature column 3"), "{err}");
    }

    mod with_models {
        use crate::categorical::{category_code, category_place};
        use crate::{Algorithm, DetectorParams, FitState, Model};
        use arrow_array::types::Int32Type;
        use arrow_array::{
            Array, ArrayRef, DictionaryArray, Float64Array, LargeStringArray, StringArray,
            StringViewArray,
        };
        use std::sync::Arc;

        fn columns(countries: &[Option<&str>], amounts: &[f64]) -> Vec<ArrayRef> {
            vec![
                Arc::new(StringArray::from(countries.to_vec())),
                Arc::new(Float64Array::from(amounts.to_vec())),
            ]
        }

        fn data() -> (Vec<Option<&'static str>>, Vec<f64>) {
            let countries: Vec<Option<&str>> = (0..100)
                .map(|i| match i {
                    7 => None,
                    99 => Some("NZ"),
                    _ if i % 4 == 0 => Some("FR"),
                    _ => Some("DE"),
                })
                .collect();
            let amounts = (0..100).map(|i| 10.0 + (i % 10) as f64).collect();
            (countries, amounts)
        }

        fn fit(alg: Algorithm, cols: &[ArrayRef]) -> Model {
            let mut f = FitState::new(DetectorParams::new(alg), cols.len());
            f.update(cols).unwrap();
            f.finish()
        }

        #[test]
        fn hbos_terms_are_category_frequencies_and_null_is_missing() {
            let (c, a) = data();
            let cols = columns(&c, &a);
            let model = fit(Algorithm::Hbos, &cols);
            assert_eq!(model.training_rows, 99);
            let probe = columns(&[Some("DE"), Some("NZ"), Some("XX"), None], &[12.0; 4]);
            let parts = model.explain(&probe).unwrap();
            // 73 DE, 25 FR, 1 NZ among 99 fitted rows (row 7 is NULL); alpha 0.1.
            let want = [
                -libm::log2(73.0 / 99.0 + 0.1),
                -libm::log2(1.0 / 99.0 + 0.1),
                -libm::log2(0.1),
            ];
            for (i, w) in want.iter().enumerate() {
                assert_eq!(parts[0].value(i), *w, "row {i}");
            }
            let scores = model.score(&probe).unwrap();
            assert!(scores.value(2) > scores.value(1) && scores.value(1) > scores.value(0));
            assert!(scores.is_null(3));
        }

        #[test]
        fn ecod_and_copod_score_rare_categories_high() {
            let (c, a) = data();
            let cols = columns(&c, &a);
            for alg in [Algorithm::Ecod, Algorithm::Copod] {
                let model = fit(alg, &cols);
                let probe = columns(
                    &[Some("DE"), Some("FR"), Some("NZ"), Some("XX")],
                    &[12.0; 4],
                );
                let parts = model.explain(&probe).unwrap();
                // FR: NZ's 1 and FR's 25 rows are in categories at most as frequent.
                let want = [
                    0.0,
                    -libm::log(26.0 / 99.0),
                    -libm::log(1.0 / 99.0),
                    libm::log(100.0),
                ];
                for (i, w) in want.iter().enumerate() {
                    assert_eq!(parts[0].value(i), *w, "{alg:?} row {i}");
                }
            }
        }

        #[test]
        fn any_split_gives_the_same_model_bytes_and_bytes_round_trip() {
            let (c, a) = data();
            let cols = columns(&c, &a);
            for alg in [
                Algorithm::Hbos,
                Algorithm::Ecod,
                Algorithm::Copod,
                Algorithm::IsolationForest,
                Algorithm::Eif,
            ] {
                let whole = fit(alg, &cols).to_bytes();
                let mut parts: Vec<FitState> = [(0, 30), (30, 31), (61, 39)]
                    .iter()
                    .map(|&(s, n)| {
                        let mut f = FitState::new(DetectorParams::new(alg), 2);
                        let batch: Vec<ArrayRef> = cols.iter().map(|c| c.slice(s, n)).collect();
                        f.update(&batch).unwrap();
                        f
                    })
                    .collect();
                let mut merged = parts.pop().unwrap();
                merged.merge(&parts[1]).unwrap();
                merged.merge(&parts[0]).unwrap();
                // A partition that saw no batch merges too.
                merged
                    .merge(&FitState::new(DetectorParams::new(alg), 2))
                    .unwrap();
                assert_eq!(merged.finish().to_bytes(), whole, "{alg:?}");
                assert_eq!(&whole[4..8], &3u32.to_le_bytes());
                let back = Model::from_bytes(&whole).unwrap();
                assert_eq!(back.to_bytes(), whole);
            }
            let numeric: Vec<ArrayRef> = vec![cols[1].clone()];
            assert_eq!(
                &fit(Algorithm::Hbos, &numeric).to_bytes()[4..8],
                &2u32.to_le_bytes()
            );
        }

        #[test]
        fn the_forests_isolate_a_rare_category() {
            let (c, a) = data();
            let cols = columns(&c, &a);
            for alg in [Algorithm::IsolationForest, Algorithm::Eif] {
                let model = fit(alg, &cols);
                let scores = model.score(&cols).unwrap();
                let top = (0..100)
                    .filter(|i| scores.is_valid(*i))
                    .max_by(|x, y| scores.value(*x).total_cmp(&scores.value(*y)))
                    .unwrap();
                assert_eq!(c[top], Some("NZ"), "{alg:?} {:?}", scores.value(top));
                assert!(scores.is_null(7));
                // a model of text features reads back and scores the same bits
                let back = Model::from_bytes(&model.to_bytes()).unwrap();
                assert_eq!(back.score(&cols).unwrap(), scores);
                // The text column alone is three distinct rows standing for 73, 25 and 1: the
                // trees draw input rows, so the frequent categories fill the nodes and sit deep.
                let alone = &cols[..1];
                let scores = fit(alg, alone).score(alone).unwrap();
                let score_of = |i: usize| scores.value(i);
                assert!(
                    score_of(99) > score_of(0) + 0.1 && score_of(0) > score_of(1),
                    "{alg:?}: NZ {} FR {} DE {}",
                    score_of(99),
                    score_of(0),
                    score_of(1)
                );
            }
            // eif's planes place a category anew per plane, in [0, 1)
            let code = category_code("NZ");
            let places: Vec<f64> = [0.5, -1.25, 3.0]
                .iter()
                .map(|&w| category_place(w, code))
                .collect();
            assert!(places.iter().all(|p| (0.0..1.0).contains(p)), "{places:?}");
            assert!(
                places[0] != places[1] && places[1] != places[2],
                "{places:?}"
            );
            assert_eq!(category_place(0.5, code), places[0]);
        }

        #[test]
        fn every_text_type_gives_the_same_codes() {
            let values = vec![Some("a"), None, Some("bb"), Some("a")];
            let plain: ArrayRef = Arc::new(StringArray::from(values.clone()));
            let large: ArrayRef = Arc::new(LargeStringArray::from(values.clone()));
            let view: ArrayRef = Arc::new(StringViewArray::from(values.clone()));
            let dict: ArrayRef = Arc::new(
                values
                    .iter()
                    .copied()
                    .collect::<DictionaryArray<Int32Type>>(),
            );
            let model = fit(Algorithm::Hbos, std::slice::from_ref(&plain));
            let want = model.score(std::slice::from_ref(&plain)).unwrap();
            for other in [large, view, dict] {
                assert_eq!(model.score(&[other]).unwrap(), want);
            }
        }

        #[test]
        fn text_where_it_cannot_go_is_an_error_naming_the_column() {
            let (c, a) = data();
            let cols = columns(&c, &a);
            let mut f = FitState::new(DetectorParams::new(Algorithm::Knn), 2);
            let err = f.update(&cols).unwrap_err().to_string();
            assert!(
                err.contains("feature column 1 is text")
                    && err.contains("hbos, ecod, copod, iforest and eif"),
                "{err}"
            );
            let numeric = fit(Algorithm::Hbos, &[cols[1].clone(), cols[1].clone()]);
            let err = numeric.score(&cols).unwrap_err().to_string();
            assert!(
                err.contains("feature column 1 is text, but the model was fitted on numeric"),
                "{err}"
            );
            let mut f = FitState::new(DetectorParams::new(Algorithm::Hbos), 2);
            f.update(&cols).unwrap();
            let err = f
                .update(&[cols[1].clone(), cols[1].clone()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("feature column 1 is numeric"), "{err}");
        }

        #[test]
        fn a_crafted_category_table_is_refused() {
            let (c, a) = data();
            let mut model = fit(Algorithm::Hbos, &columns(&c, &a));
            if let Some(Some(t)) = model.categories.get_mut(0) {
                t.codes.reverse();
            }
            let err = Model::from_bytes(&model.to_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains("increasing"), "{err}");
        }
    }
}
