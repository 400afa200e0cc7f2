//! The generalized extreme Studentized deviate test (Rosner, 1983).
//!
//! Up to r = ⌊max_anoms · n⌋ (at most n − 2) steps: step i removes the value farthest from the
//! mean of those left, R_i = |x − mean| / s (sample std, ddof 1), and compares it with
//! λ_i = (m − 1)·t / √((m − 2 + t²)·m), m = n − i + 1, t the 1 − α / (2m) quantile of Student's t
//! with m − 2 degrees of freedom. The anomalies are the values removed in steps 1 ..= k, k the last
//! step with R_i > λ_i. The farthest value is always the smallest or largest left, so the values
//! are sorted once and the mean and variance of the rest are kept by compensated running sums of
//! deviations from the median: O(n log n) a series, not O(r·n).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// One step of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EsdStep {
    /// Index (into the input) of the value removed.
    pub index: usize,
    pub statistic: f64,
    pub critical: f64,
}

/// The steps of the test over `values` (None = missing, never an anomaly); empty below 3 values.
pub fn esd_steps(values: &[Option<f64>], max_anoms: f64, alpha: f64) -> Vec<EsdStep> {
    let mut order: Vec<(f64, usize)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (v, i)))
        .collect();
    let n = order.len();
    if n < 3 {
        return Vec::new();
    }
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let centre = order[n / 2].0;
    let mut sum = Compensated::default();
    let mut squares = Compensated::default();
    for (v, _) in &order {
        let d = v - centre;
        sum.add(d);
        squares.add(d * d);
    }
    let r = ((max_anoms * n as f64).floor() as usize).min(n - 2);
    let (mut lo, mut hi) = (0usize, n);
    let mut steps = Vec::with_capacity(r);
    for i in 1..=r {
        let m = n - i + 1;
        let mean = sum.value() / m as f64;
        let var = (squares.value() - sum.value() * mean) / (m - 1) as f64;
        if var.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            break;
        }
        let sd = var.sqrt();
        let low = (mean - (order[lo].0 - centre)).abs();
        let high = ((order[hi - 1].0 - centre) - mean).abs();
        let (dev, (v, index)) = if high >= low {
            hi -= 1;
            (high, order[hi])
        } else {
            lo += 1;
            (low, order[lo - 1])
        };
        let d = v - centre;
        sum.add(-d);
        squares.add(-(d * d));
        steps.push(EsdStep {
            index,
            statistic: dev / sd,
            critical: critical_value(m, alpha),
        });
    }
    steps
}

/// The anomaly flags of [`esd_steps`]: None for missing values (or below 3 values).
pub fn esd_flags(values: &[Option<f64>], max_anoms: f64, alpha: f64) -> Vec<Option<bool>> {
    let steps = esd_steps(values, max_anoms, alpha);
    let valid = values.iter().filter(|v| v.is_some()).count();
    let mut flags: Vec<Option<bool>> = values
        .iter()
        .map(|v| (v.is_some() && valid >= 3).then_some(false))
        .collect();
    let k = steps
        .iter()
        .rposition(|s| s.statistic > s.critical)
        .map_or(0, |p| p + 1);
    for s in &steps[..k] {
        flags[s.index] = Some(true);
    }
    flags
}

/// λ for m values left: (m − 1)·t / √((m − 2 + t²)·m).
fn critical_value(m: usize, alpha: f64) -> f64 {
    // Series of equal length share their critical values: computed once per (α, m).
    static CACHE: LazyLock<Mutex<HashMap<(u64, usize), f64>>> = LazyLock::new(Default::default);
    let key = (alpha.to_bits(), m);
    if let Some(v) = CACHE.lock().ok().and_then(|c| c.get(&key).copied()) {
        return v;
    }
    let t = super::student_t::t_isf(alpha / (2.0 * m as f64), (m - 2) as f64);
    let mf = m as f64;
    let v = (mf - 1.0) * t / ((mf - 2.0 + t * t) * mf).sqrt();
    if let Ok(mut c) = CACHE.lock() {
        if c.len() > 100_000 {
            c.clear();
        }
        c.insert(key, v);
    }
    v
}

/// Kahan–Babuška–Neumaier sum: removing a value keeps the rest's sum to a few ulps.
#[derive(Debug, Default, Clone, Copy)]
struct Compensated {
    sum: f64,
    correction: f64,
}

impl Compensated {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.correction += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }
    fn value(&self) -> f64 {
        self.sum + self.correction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosner (1983)'s 54 values, as the NIST handbook's worked example (§1.3.5.17.3).
    const ROSNER: [f64; 54] = [
        -0.25, 0.68, 0.94, 1.15, 1.20, 1.26, 1.26, 1.34, 1.38, 1.43, 1.49, 1.49, 1.55, 1.56, 1.58,
        1.65, 1.69, 1.70, 1.76, 1.77, 1.81, 1.91, 1.94, 1.96, 1.99, 2.06, 2.09, 2.10, 2.14, 2.15,
        2.23, 2.24, 2.26, 2.35, 2.37, 2.40, 2.47, 2.54, 2.62, 2.64, 2.90, 2.92, 2.92, 2.93, 3.21,
        3.26, 3.30, 3.59, 3.68, 4.30, 4.64, 5.34, 5.42, 6.01,
    ];

    #[test]
    fn the_nist_example() {
        let v: Vec<Option<f64>> = ROSNER.iter().map(|x| Some(*x)).collect();
        let steps = esd_steps(&v, 10.0 / 54.0, 0.05);
        // NIST lists R truncated to 3.118 2.942 3.179 2.810 2.815 2.848 2.279 2.310 2.101 2.067 and
        // λ 3.158 3.151 3.143 3.136 3.128 3.120 3.111 3.103 3.094 3.085: three outliers. The R below
        // are NumPy's (|x − mean| / std(ddof=1), removing the farthest each step).
        let want_r = [
            3.118_906_048_982_441_6,
            2.942_973_113_643_506_4,
            3.179_423_936_717_836,
            2.810_181_144_427_59,
            2.815_579_563_444_277_5,
            2.848_171_627_930_343,
            2.279_327_054_990_343_3,
            2.310_366_059_054_3,
            2.101_580_651_024_145,
            2.067_178_078_025_364_6,
        ];
        for (s, want) in steps.iter().zip(want_r) {
            assert!(
                (s.statistic - want).abs() < 1e-12 * want,
                "{} vs {want}",
                s.statistic
            );
        }
        // scipy: (m − 1)·t(m − 2).isf(α / 2m) / √((m − 2 + t²)·m).
        let want_l = [
            3.158_793_940_887_314_5,
            3.151_430_023_315_798_6,
            3.143_889_685_031_729_3,
            3.136_164_956_057_484_7,
            3.128_247_334_330_611_6,
            3.120_127_738_314_371_5,
            3.111_796_454_289_481,
            3.103_243_077_601_703_3,
            3.094_456_447_022_688,
            3.085_424_571_242_275_4,
        ];
        for (s, want) in steps.iter().zip(want_l) {
            assert!(
                (s.critical - want).abs() < 1e-10 * want,
                "{} vs {want}",
                s.critical
            );
        }
        let flags = esd_flags(&v, 10.0 / 54.0, 0.05);
        let flagged: Vec<f64> = (0..54)
            .filter(|i| flags[*i] == Some(true))
            .map(|i| ROSNER[i])
            .collect();
        assert_eq!(flagged, [5.34, 5.42, 6.01]);
    }

    #[test]
    fn missing_values_and_short_series() {
        let v = [Some(1.0), None, Some(2.0)];
        assert_eq!(esd_flags(&v, 0.5, 0.05), [None, None, None]);
        let mut v: Vec<Option<f64>> = (0..40).map(|i| Some((i % 5) as f64)).collect();
        v[7] = None;
        v[30] = Some(100.0);
        let f = esd_flags(&v, 0.1, 0.05);
        assert_eq!(f[7], None);
        assert_eq!(f[30], Some(true));
        assert_eq!(f.iter().filter(|f| **f == Some(true)).count(), 1);
        let constant = vec![Some(4.0); 10];
        assert!(
            esd_flags(&constant, 0.5, 0.05)
                .iter()
                .all(|f| *f == Some(false))
        );
    }
}
