//! The values of `synthetic_rows`: each a pure function of (seed, row, feature), made with integer
//! arithmetic and one multiply-add, so a row is the same bits whichever partition, process or CPU
//! makes it, and a partition can start at any row without making the rows before it.

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
use std::sync::Arc;

/// The golden-ratio increment of SplitMix64: consecutive keys land far apart before mixing.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// Separates the "is this row planted" draw from the feature draws of the same row.
const PLANTED_STREAM: u64 = 0x5bd1_e995_0000_0001;
/// How far (in standard deviations) a planted row's features are pushed out.
pub const PLANTED_SHIFT: f64 = 6.0;

/// SplitMix64's finaliser: a bijection on u64 whose outputs pass BigCrush for counter inputs.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key all of one row's draws derive from.
#[inline]
fn row_key(seed: u64, row: u64) -> u64 {
    mix(seed ^ mix(row.wrapping_add(GOLDEN)))
}

/// An approximately standard normal draw: the sum of four 16-bit uniforms (Irwin–Hall, n = 4),
/// centred and scaled to variance 1. Bounded (|z| ≤ 3.47), which keeps planted rows apart.
#[inline]
fn normal(h: u64) -> f64 {
    let lanes = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
    // Each lane is uniform on 0..=65535 (variance (65536² - 1) / 12); four have 4x that.
    const CENTRE: f64 = 2.0 * 65_535.0;
    const SD: f64 = 37_837.227_24; // sqrt(4 * (65536^2 - 1) / 12)
    (lanes as f64 - CENTRE) / SD
}

/// Whether `row` is one of the planted anomalies (a `fraction` of rows, drawn independently).
#[inline]
pub fn planted(seed: u64, row: u64, fraction: f64) -> bool {
    let u = (mix(row_key(seed, row) ^ PLANTED_STREAM) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// Feature `feature` of `row`: mean `10 * feature`, standard deviation `1 + feature`; a planted
/// row's value is pushed [`PLANTED_SHIFT`] deviations out, the direction drawn per feature.
#[inline]
pub fn value(seed: u64, row: u64, feature: u32, fraction: f64) -> f64 {
    let key = row_key(seed, row);
    feature_value(key, feature, planted(seed, row, fraction))
}

#[inline]
fn feature_value(key: u64, feature: u32, planted: bool) -> f64 {
    let h = mix(key.wrapping_add((feature as u64 + 1).wrapping_mul(GOLDEN)));
    let mut z = normal(h);
    if planted {
        // The sign from a further mix, so it does not lean on the lanes of the draw itself.
        z += if mix(h) & 1 == 0 {
            PLANTED_SHIFT
        } else {
            -PLANTED_SHIFT
        };
    }
    10.0 * feature as f64 + (1.0 + feature as f64) * z
}

/// One of the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Feature(u32),
    Planted,
}

/// The arrays of `columns` for rows `start..start + len`.
pub fn arrays(
    seed: u64,
    fraction: f64,
    start: u64,
    len: usize,
    columns: &[Column],
) -> Vec<ArrayRef> {
    let rows = start..start + len as u64;
    let keys: Vec<u64> = rows.clone().map(|r| row_key(seed, r)).collect();
    let planted_rows: Vec<bool> = rows.clone().map(|r| planted(seed, r, fraction)).collect();
    columns
        .iter()
        .map(|c| -> ArrayRef {
            match *c {
                Column::Id => {
                    Arc::new(Int64Array::from_iter_values(rows.clone().map(|r| r as i64)))
                }
                Column::Planted => Arc::new(BooleanArray::from(planted_rows.clone())),
                Column::Feature(j) => Arc::new(Float64Array::from_iter_values(
                    keys.iter()
                        .zip(&planted_rows)
                        .map(|(&k, &p)| feature_value(k, j, p)),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;

    #[test]
    fn values_are_fixed_bits_for_a_seed() {
        // Pinned: any change to the generator changes every benchmark's input.
        let first: Vec<f64> = (0..3).map(|r| value(42, r, 1, 0.0)).collect();
        assert_eq!(
            first.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>(),
            PINNED_SEED_42_FEATURE_1
        );
        assert_ne!(value(42, 0, 1, 0.0), value(43, 0, 1, 0.0));
    }

    const PINNED_SEED_42_FEATURE_1: [&str; 3] = ["11.000390", "11.506717", "10.929772"];

    #[test]
    fn a_range_is_the_same_rows_wherever_it_starts() {
        let cols = [
            Column::Id,
            Column::Feature(0),
            Column::Feature(3),
            Column::Planted,
        ];
        let whole = arrays(7, 0.05, 1_000, 100, &cols);
        let tail = arrays(7, 0.05, 1_040, 60, &cols);
        for (w, t) in whole.iter().zip(&tail) {
            assert_eq!(&w.slice(40, 60), t);
        }
    }

    #[test]
    fn features_have_their_mean_and_deviation_and_planted_rows_their_share() {
        let n = 200_000;
        let cols = [Column::Feature(2), Column::Planted];
        let a = arrays(1, 0.01, 0, n, &cols);
        let planted = a[1].as_boolean();
        let values = a[0].as_primitive::<Float64Type>();
        let normal: Vec<f64> = values
            .values()
            .iter()
            .zip(planted.iter())
            .filter(|(_, p)| !p.unwrap())
            .map(|(v, _)| *v)
            .collect();
        let mean = normal.iter().sum::<f64>() / normal.len() as f64;
        let sd =
            (normal.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / normal.len() as f64).sqrt();
        assert!((mean - 20.0).abs() < 0.03, "mean {mean}");
        assert!((sd - 3.0).abs() < 0.03, "sd {sd}");
        let share = planted.true_count() as f64 / n as f64;
        assert!((share - 0.01).abs() < 0.001, "planted share {share}");
        // Every planted value is at least 6 - 3.47 deviations from the mean.
        for (v, p) in values.values().iter().zip(planted.iter()) {
            if p.unwrap() {
                assert!(((v - 20.0) / 3.0).abs() > 2.5, "planted value {v}");
            }
        }
        assert_eq!(
            arrays(1, 0.0, 0, 1000, &[Column::Planted])[0]
                .as_boolean()
                .true_count(),
            0
        );
        assert_eq!(
            arrays(1, 1.0, 0, 1000, &[Column::Planted])[0]
                .as_boolean()
                .true_count(),
            1000
        );
    }
}
