//! Time-series detectors: each scores one series (the rows of one `PARTITION BY` group in
//! `ORDER BY` order, evenly spaced), so they run as window functions.
//!
//! - [`SeriesDetector::Seasonal`]: a robust STL decomposition ([`stl`], statsmodels' procedure) by
//!   a given or detected ([`period`]) period; the score is the robust z of the residual,
//!   |r − median(r)| / (1.4826 · MAD(r)). A series with no detected period is scored on the
//!   residual of a robust loess trend alone.
//! - [`SeriesDetector::Rolling`]: each value against the median/MAD of the rows before it
//!   ([`rolling`]), after a warm-up.
//! - [`SeriesDetector::Esd`]: the generalized ESD test's anomalies ([`esd`]), on the values or,
//!   with a `period` option, on the seasonal fit's residual.
//!
//! Missing values (None: NULL, NaN, ±Inf) score None. The decomposition fills them by linear
//! interpolation between the nearest values (the nearest value at either end) and leaves them
//! out of the residual's median and MAD; the rolling frame and ESD skip them.

pub mod esd;
pub mod period;
pub mod rolling;
pub mod stl;
pub mod student_t;

use crate::algorithms::moments::scaled_distance;
use crate::error::{DetectorError, Result};
use stl::StlOptions;

/// The time-series detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesDetector {
    Seasonal,
    Rolling,
    Esd,
}

impl SeriesDetector {
    /// The option names each detector takes.
    pub fn valid_options(self) -> &'static [&'static str] {
        match self {
            SeriesDetector::Seasonal => &[
                "period",
                "max_period",
                "seasonal",
                "trend",
                "low_pass",
                "robust",
                "seasonal_jump",
                "trend_jump",
                "low_pass_jump",
                "inner_iter",
                "outer_iter",
            ],
            SeriesDetector::Rolling => &["window", "warmup"],
            SeriesDetector::Esd => &["max_anoms", "alpha", "period", "max_period"],
        }
    }
}

/// Options of every series detector, parsed from `'key=value, ...'`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOptions {
    pub detector: SeriesDetector,
    /// None: detect by autocorrelation.
    pub period: Option<usize>,
    pub max_period: usize,
    pub seasonal: usize,
    pub trend: Option<usize>,
    pub low_pass: Option<usize>,
    pub robust: bool,
    pub jumps: [usize; 3],
    /// statsmodels' `fit(inner_iter, outer_iter)`; None: its defaults for `robust`.
    pub inner_iter: Option<usize>,
    pub outer_iter: Option<usize>,
    pub window: usize,
    pub warmup: Option<usize>,
    pub max_anoms: f64,
    pub alpha: f64,
    /// ESD on the seasonal fit's residual (a `period` option given), not on the values.
    pub esd_on_residual: bool,
}

/// Upper bound of lengths, periods and windows: a frame is held in memory per series.
pub const MAX_LENGTH: usize = 1_000_000;

impl SeriesOptions {
    pub fn new(detector: SeriesDetector) -> Self {
        Self {
            detector,
            period: None,
            max_period: 1_000,
            seasonal: 7,
            trend: None,
            low_pass: None,
            robust: true,
            jumps: [1, 1, 1],
            inner_iter: None,
            outer_iter: None,
            window: 100,
            warmup: None,
            max_anoms: 0.1,
            alpha: 0.05,
            esd_on_residual: false,
        }
    }

    /// Parses `'period=24, robust=false'` for `function` (named in errors).
    pub fn parse(detector: SeriesDetector, function: &str, text: &str) -> Result<Self> {
        let mut o = Self::new(detector);
        for part in text
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((key, value)) = part.split_once('=') else {
                return Err(DetectorError::MalformedOptions {
                    text: text.to_string(),
                    reason: format!("'{part}' has no '='"),
                });
            };
            o.set(function, &key.trim().to_ascii_lowercase(), value.trim())?;
        }
        let needs_period = |name: &str| DetectorError::InvalidOption {
            name: name.to_string(),
            value: "(set)".to_string(),
            expected: "a fixed period: give period=N with it, or leave it to the default".into(),
        };
        match o.period {
            None if o.trend.is_some() => return Err(needs_period("trend")),
            None if o.low_pass.is_some() => return Err(needs_period("low_pass")),
            Some(p) => {
                for (name, len) in [("trend", o.trend), ("low_pass", o.low_pass)] {
                    if let Some(len) = len.filter(|l| *l <= p) {
                        return Err(DetectorError::InvalidOption {
                            name: name.into(),
                            value: len.to_string(),
                            expected: format!("an odd integer greater than period ({p})"),
                        });
                    }
                }
            }
            None => {}
        }
        if let Some(w) = o.warmup.filter(|w| *w > o.window) {
            return Err(DetectorError::InvalidOption {
                name: "warmup".into(),
                value: w.to_string(),
                expected: format!("at most window ({})", o.window),
            });
        }
        Ok(o)
    }

    fn set(&mut self, function: &str, key: &str, value: &str) -> Result<()> {
        let valid = self.detector.valid_options();
        if !valid.contains(&key) {
            return Err(DetectorError::UnknownOption {
                algorithm: function.to_string(),
                name: key.to_string(),
                hint: crate::suggest::closest(key, valid.iter().copied())
                    .map(|n| format!(" (did you mean '{n}'?)"))
                    .unwrap_or_default(),
                valid: valid.join(", "),
            });
        }
        let invalid = |expected: &str| DetectorError::InvalidOption {
            name: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let int = |lo: usize, hi: usize, what: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| invalid(what))
        };
        let odd = |what: &str| {
            int(3, MAX_LENGTH, what)
                .and_then(|v| (v % 2 == 1).then_some(v).ok_or_else(|| invalid(what)))
        };
        let fraction = |what: &str, hi: f64| {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && *v <= hi)
                .ok_or_else(|| invalid(what))
        };
        match key {
            "period" if value.eq_ignore_ascii_case("auto") => {
                self.period = None;
                self.esd_on_residual = true;
            }
            "period" => {
                self.period = Some(int(2, MAX_LENGTH, "an integer ≥ 2, or 'auto'")?);
                self.esd_on_residual = true;
            }
            "max_period" => self.max_period = int(2, MAX_LENGTH, "an integer from 2 to 1000000")?,
            "seasonal" => self.seasonal = odd("an odd integer ≥ 3")?,
            "trend" => self.trend = Some(odd("an odd integer ≥ 3")?),
            "low_pass" => self.low_pass = Some(odd("an odd integer ≥ 3")?),
            "robust" => {
                self.robust = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(invalid("true or false")),
                }
            }
            "seasonal_jump" | "trend_jump" | "low_pass_jump" => {
                let i = ["seasonal_jump", "trend_jump", "low_pass_jump"]
                    .iter()
                    .position(|k| *k == key)
                    .unwrap_or(0);
                self.jumps[i] = int(1, MAX_LENGTH, "a positive integer")?;
            }
            "inner_iter" => self.inner_iter = Some(int(1, 100, "an integer from 1 to 100")?),
            "outer_iter" => self.outer_iter = Some(int(0, 100, "an integer from 0 to 100")?),
            "window" => self.window = int(1, MAX_LENGTH, "an integer from 1 to 1000000")?,
            "warmup" => self.warmup = Some(int(1, MAX_LENGTH, "an integer from 1 to window")?),
            "max_anoms" => self.max_anoms = fraction("a fraction in (0, 0.5]", 0.5)?,
            "alpha" => {
                self.alpha = fraction("a probability in (0, 1)", 1.0)?;
                if self.alpha >= 1.0 {
                    return Err(invalid("a probability in (0, 1)"));
                }
            }
            _ => unreachable!("checked against valid_options"),
        }
        Ok(())
    }

    /// The STL options for a series with this period.
    pub fn stl(&self, period: usize) -> StlOptions {
        let mut o = StlOptions::new(period, self.robust);
        o.seasonal = self.seasonal;
        o.set_default_lengths();
        if let Some(t) = self.trend {
            o.trend = t;
        }
        if let Some(l) = self.low_pass {
            o.low_pass = l;
        }
        [o.seasonal_jump, o.trend_jump, o.low_pass_jump] = self.jumps;
        o.inner_iter = self.inner_iter.unwrap_or(o.inner_iter);
        o.outer_iter = self.outer_iter.unwrap_or(o.outer_iter);
        o
    }
}

/// Scores one series; the ESD's anomalies score 1, its other values 0.
pub fn series_scores(values: &[Option<f64>], o: &SeriesOptions) -> Vec<Option<f64>> {
    match o.detector {
        SeriesDetector::Seasonal => seasonal_scores(values, o),
        SeriesDetector::Rolling => {
            rolling::rolling_scores(values, o.window, o.warmup.unwrap_or(o.window))
        }
        SeriesDetector::Esd => esd_flags(values, o)
            .into_iter()
            .map(|f| f.map(|f| if f { 1.0 } else { 0.0 }))
            .collect(),
    }
}

/// The ESD's anomalies: on the values, or with a `period` option on the seasonal fit's residual
/// (seasonal ESD, as Twitter's S-ESD).
pub fn esd_flags(values: &[Option<f64>], o: &SeriesOptions) -> Vec<Option<bool>> {
    if o.esd_on_residual {
        esd::esd_flags(&seasonal_residuals(values, o), o.max_anoms, o.alpha)
    } else {
        esd::esd_flags(values, o.max_anoms, o.alpha)
    }
}

/// The seasonal detector's scores; all None when the series has no value, or is shorter than
/// two cycles of a given period.
pub fn seasonal_scores(values: &[Option<f64>], o: &SeriesOptions) -> Vec<Option<f64>> {
    robust_z(&seasonal_residuals(values, o))
}

/// y − (seasonal + trend) for the present values (see [`seasonal_scores`] for the all-None cases).
pub fn seasonal_residuals(values: &[Option<f64>], o: &SeriesOptions) -> Vec<Option<f64>> {
    let Some(y) = filled(values) else {
        return vec![None; values.len()];
    };
    let n = y.len();
    let period = match o.period {
        Some(p) if n < 2 * p => return vec![None; n],
        Some(p) => Some(p),
        None => period::detect_period(&y, o.max_period),
    };
    let fit = match period {
        Some(p) => {
            let d = stl::decompose(&y, &o.stl(p));
            (0..n).map(|i| d.seasonal[i] + d.trend[i]).collect()
        }
        None => stl::robust_trend(&y, stl::odd_above((n / 20).clamp(6, 1_000)), o.robust),
    };
    values
        .iter()
        .zip(y.iter().zip(&fit))
        .map(|(v, (y, f))| v.map(|_| y - f))
        .collect()
}

/// |r − median| / (1.4826 · MAD) over the present values; a zero MAD scores 0 at the median and
/// +Infinity elsewhere.
pub fn robust_z(r: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut sorted: Vec<f64> = r.iter().flatten().copied().collect();
    if sorted.is_empty() {
        return vec![None; r.len()];
    }
    sorted.sort_by(f64::total_cmp);
    let (med, mad) = rolling::median_and_mad(&sorted);
    r.iter()
        .map(|v| v.map(|v| scaled_distance((v - med).abs(), 1.4826 * mad)))
        .collect()
}

/// The series with missing values filled linearly between their neighbours (the nearest value at
/// either end); None when no value is present.
pub fn filled(values: &[Option<f64>]) -> Option<Vec<f64>> {
    let first = values.iter().position(Option::is_some)?;
    let mut out = Vec::with_capacity(values.len());
    let mut last = (first, values[first].unwrap_or_default());
    out.extend(std::iter::repeat_n(last.1, first));
    let mut i = first;
    while i < values.len() {
        match values[i] {
            Some(v) => {
                out.push(v);
                last = (i, v);
                i += 1;
            }
            None => {
                let next = values[i..].iter().position(Option::is_some).map(|p| i + p);
                let end = next.unwrap_or(values.len());
                for j in i..end {
                    out.push(match next {
                        Some(k) => {
                            let b = values[k].unwrap_or_default();
                            let t = (j - last.0) as f64 / (k - last.0) as f64;
                            last.1 + (b - last.1) * t
                        }
                        None => last.1,
                    });
                }
                i = end;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
