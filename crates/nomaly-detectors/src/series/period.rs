//! The period of a series from its autocorrelation.
//!
//! The series (gaps filled) minus its least-squares line; its autocorrelation r(lag) =
//! Σ d_t·d_{t+lag} / Σ d_t² for lags 1 ..= max_lag + 1, with max_lag = min(n / 2, `max_period`)
//! so at least two cycles are seen. A lag is a candidate when it is a local peak
//! (r(lag) > r(lag − 1) and r(lag) ≥ r(lag + 1)), lag ≥ 2, r(lag) ≥ [`MIN_PEAK`], and the peak
//! rises at least [`MIN_PROMINENCE`] above the lowest r of the smaller lags (so the wiggles of a
//! slowly decaying, trending or random-walk autocorrelation are not periods). The period is the
//! shortest candidate that the strongest candidate's lag is a multiple of (within one lag) and
//! that reaches [`HARMONIC_SHARE`] of its r — noise can make 14 out-correlate a weekly 7 — so
//! usually the strongest itself; none means no seasonality.
//! Cost: n × max_lag multiply-adds per series.

/// Lowest autocorrelation a period's peak may have.
pub const MIN_PEAK: f64 = 0.2;
/// How far a peak must rise above the trough before it.
pub const MIN_PROMINENCE: f64 = 0.1;
/// The share of the strongest peak's r a shorter period it is a multiple of must reach.
pub const HARMONIC_SHARE: f64 = 0.5;

/// The detected period of `x` (finite values), or None.
pub fn detect_period(x: &[f64], max_period: usize) -> Option<usize> {
    let n = x.len();
    let max_lag = (n / 2).min(max_period);
    if max_lag < 2 {
        return None;
    }
    let d = detrended(x);
    let denom: f64 = d.iter().map(|v| v * v).sum();
    if denom.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !denom.is_finite() {
        return None;
    }
    let top = (max_lag + 1).min(n - 1);
    let acf: Vec<f64> = (0..=top)
        .map(|lag| {
            let s: f64 = d[..n - lag].iter().zip(&d[lag..]).map(|(a, b)| a * b).sum();
            s / denom
        })
        .collect();
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    let mut trough = acf[1];
    for lag in 2..=max_lag {
        trough = trough.min(acf[lag - 1]);
        let r = acf[lag];
        let next = acf.get(lag + 1).copied().unwrap_or(f64::NEG_INFINITY);
        if r > acf[lag - 1] && r >= next && r >= MIN_PEAK && r - trough >= MIN_PROMINENCE {
            candidates.push((lag, r));
        }
    }
    let &(strongest, top) =
        candidates
            .iter()
            .fold(None, |b: Option<&(usize, f64)>, c| match b {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            })?;
    // A multiple of the period can out-correlate it by noise: take the shortest candidate the
    // strongest lag is (within one) a multiple of, if it reaches half the strongest's r.
    candidates
        .iter()
        .find(|(lag, r)| {
            let rem = strongest % lag;
            (rem <= 1 || lag - rem <= 1) && *r >= HARMONIC_SHARE * top
        })
        .map(|(lag, _)| *lag)
}

/// x minus its least-squares line over t = 0, 1, ….
fn detrended(x: &[f64]) -> Vec<f64> {
    let n = x.len() as f64;
    let t_mean = (n - 1.0) / 2.0;
    let x_mean = x.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, v) in x.iter().enumerate() {
        let dt = t as f64 - t_mean;
        sxy += dt * (v - x_mean);
        sxx += dt * dt;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    x.iter()
        .enumerate()
        .map(|(t, v)| v - (x_mean + slope * (t as f64 - t_mean)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = DeterministicRng::new(seed);
        (0..n).map(|_| rng.next_f64() - 0.5).collect()
    }

    #[test]
    fn finds_the_period_under_trend_and_noise() {
        let e = noise(1000, 1);
        for period in [7usize, 24, 60] {
            let x: Vec<f64> = (0..1000)
                .map(|t| {
                    let phase = 2.0 * std::f64::consts::PI * (t % period) as f64 / period as f64;
                    0.01 * t as f64 + 3.0 * phase.sin() + e[t]
                })
                .collect();
            assert_eq!(detect_period(&x, 1000), Some(period));
        }
    }

    #[test]
    fn no_period_in_noise_a_line_or_a_random_walk() {
        assert_eq!(detect_period(&noise(1000, 2), 1000), None);
        let line: Vec<f64> = (0..500).map(|t| 2.0 * t as f64).collect();
        assert_eq!(detect_period(&line, 1000), None);
        let mut walk = vec![0.0];
        for e in noise(2000, 3) {
            walk.push(walk.last().unwrap() + e);
        }
        assert_eq!(detect_period(&walk, 1000), None);
        assert_eq!(detect_period(&[1.0, 2.0, 3.0], 1000), None);
    }

    #[test]
    fn max_period_bounds_the_search() {
        let x: Vec<f64> = (0..1000).map(|t| ((t % 50) as f64).sqrt()).collect();
        assert_eq!(detect_period(&x, 1000), Some(50));
        assert_eq!(detect_period(&x, 40), None);
    }
}
