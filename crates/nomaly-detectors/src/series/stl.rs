//! STL: seasonal-trend decomposition by loess (Cleveland, Cleveland, McRae & Terpenning, 1990).
//!
//! The procedure of the NETLIB Fortran as statsmodels' `STL` runs it (including its fixed median
//! in the robustness weights), so residuals equal statsmodels' for the same options. Arithmetic is
//! plain IEEE multiply/add/divide in a fixed order (cubes and squares by multiplication, no libm
//! call), so the decomposition has the same bits on every CPU.
//!
//! Indices inside the loess helpers are 1-based where the original's are, so the boundary rules
//! read as in the paper; buffers are 0-based slices.

/// Options of one decomposition (statsmodels' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StlOptions {
    pub period: usize,
    /// Seasonal smoother length (odd, ≥ 3).
    pub seasonal: usize,
    /// Trend smoother length (odd, > period).
    pub trend: usize,
    /// Low-pass filter length (odd, > period).
    pub low_pass: usize,
    pub seasonal_deg: u8,
    pub trend_deg: u8,
    pub low_pass_deg: u8,
    pub seasonal_jump: usize,
    pub trend_jump: usize,
    pub low_pass_jump: usize,
    pub inner_iter: usize,
    pub outer_iter: usize,
}

impl StlOptions {
    /// statsmodels' defaults for a period: seasonal 7, trend the smallest odd integer
    /// ≥ 1.5·period / (1 − 1.5/seasonal), low-pass the smallest odd integer > period; robust runs
    /// 2 inner and 15 outer iterations, otherwise 5 inner and none outer.
    pub fn new(period: usize, robust: bool) -> Self {
        let seasonal = 7;
        let mut o = Self {
            period,
            seasonal,
            trend: 0,
            low_pass: 0,
            seasonal_deg: 1,
            trend_deg: 1,
            low_pass_deg: 1,
            seasonal_jump: 1,
            trend_jump: 1,
            low_pass_jump: 1,
            inner_iter: if robust { 2 } else { 5 },
            outer_iter: if robust { 15 } else { 0 },
        };
        o.set_default_lengths();
        o
    }

    /// Recomputes `trend` and `low_pass` from `period` and `seasonal`.
    pub fn set_default_lengths(&mut self) {
        self.trend = default_trend(self.period, self.seasonal);
        self.low_pass = odd_above(self.period);
    }
}

/// The smallest odd integer ≥ 1.5·period / (1 − 1.5/seasonal) (statsmodels' rule).
pub fn default_trend(period: usize, seasonal: usize) -> usize {
    let t = (1.5 * period as f64 / (1.0 - 1.5 / seasonal as f64)).ceil() as usize;
    t + usize::from(t.is_multiple_of(2))
}

/// The smallest odd integer > n.
pub fn odd_above(n: usize) -> usize {
    let l = n + 1;
    l + usize::from(l.is_multiple_of(2))
}

/// The result of [`decompose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub seasonal: Vec<f64>,
    pub trend: Vec<f64>,
    /// Final robustness weights (all 1 without outer iterations).
    pub weights: Vec<f64>,
}

impl Decomposition {
    /// y − seasonal − trend.
    pub fn residuals(&self, y: &[f64]) -> Vec<f64> {
        y.iter()
            .zip(&self.seasonal)
            .zip(&self.trend)
            .map(|((y, s), t)| y - s - t)
            .collect()
    }
}

/// Decomposes `y` (finite values, evenly spaced). Lengths are assumed checked by the caller:
/// `period ≥ 2`, odd smoother lengths ≥ 3, `trend` and `low_pass` > `period`, jumps ≥ 1.
pub fn decompose(y: &[f64], o: &StlOptions) -> Decomposition {
    let n = y.len();
    let mut s = Stl {
        y,
        o,
        season: vec![0.0; n],
        trend: vec![0.0; n],
        rw: vec![1.0; n],
        use_rw: false,
        work: std::array::from_fn(|_| vec![0.0; n + 2 * o.period]),
        tricube: Tricube::default(),
    };
    let mut k = 0;
    loop {
        s.one_step();
        k += 1;
        if k > o.outer_iter {
            break;
        }
        let fit: Vec<f64> = (0..n).map(|i| s.trend[i] + s.season[i]).collect();
        robustness_weights(y, &fit, &mut s.rw);
        s.use_rw = true;
    }
    Decomposition {
        seasonal: s.season,
        trend: s.trend,
        weights: s.rw,
    }
}

struct Stl<'a> {
    y: &'a [f64],
    o: &'a StlOptions,
    season: Vec<f64>,
    trend: Vec<f64>,
    rw: Vec<f64>,
    use_rw: bool,
    work: [Vec<f64>; 5],
    tricube: Tricube,
}

impl Stl<'_> {
    /// The inner loop: cycle-subseries smoothing, low-pass of the smoothed cycle-subseries,
    /// seasonal = the difference, trend = loess of the deseasonalised series.
    fn one_step(&mut self) {
        let (n, np) = (self.y.len(), self.o.period);
        let o = *self.o;
        for _ in 0..o.inner_iter {
            for i in 0..n {
                self.work[0][i] = self.y[i] - self.trend[i];
            }
            self.smooth_cycle_subseries();
            let [w0, w1, w2, _, _] = &mut self.work;
            low_pass_moving_averages(w1, n + 2 * np, np, w2, w0);
            loess_smooth(
                &w2[..n],
                o.low_pass,
                o.low_pass_deg,
                o.low_pass_jump,
                None,
                &mut w0[..n],
                &mut self.tricube,
            );
            for i in 0..n {
                self.season[i] = w1[np + i] - w0[i];
                w0[i] = self.y[i] - self.season[i];
            }
            let rw = self.use_rw.then_some(&self.rw[..]);
            loess_smooth(
                &w0[..n],
                o.trend,
                o.trend_deg,
                o.trend_jump,
                rw,
                &mut self.trend,
                &mut self.tricube,
            );
        }
    }

    /// Smooths each cycle-subseries (every period-th value) by loess, extended one cycle on each
    /// side, into `work[1]` (length n + 2·period).
    fn smooth_cycle_subseries(&mut self) {
        let (n, np, o) = (self.y.len(), self.o.period, *self.o);
        let [w0, w1, w2, w3, w4] = &mut self.work;
        let tricube = &mut self.tricube;
        for j in 0..np {
            let k = (n - (j + 1)) / np + 1;
            for (i, w) in w2[..k].iter_mut().enumerate() {
                *w = w0[i * np + j];
            }
            let rw = if self.use_rw {
                for (i, w) in w4[..k].iter_mut().enumerate() {
                    *w = self.rw[i * np + j];
                }
                Some(&w4[..k])
            } else {
                None
            };
            let sub = &w2[..k];
            loess_smooth(
                sub,
                o.seasonal,
                o.seasonal_deg,
                o.seasonal_jump,
                rw,
                &mut w3[1..k + 1],
                tricube,
            );
            let nright = o.seasonal.min(k);
            w3[0] = loess_at(sub, o.seasonal, o.seasonal_deg, 0, 1, nright, rw, tricube)
                .unwrap_or(w3[1]);
            let nleft = (k as i64 - o.seasonal as i64 + 1).max(1) as usize;
            let xs = k as i64 + 1;
            w3[k + 1] = loess_at(sub, o.seasonal, o.seasonal_deg, xs, nleft, k, rw, tricube)
                .unwrap_or(w3[k]);
            for m in 0..k + 2 {
                w1[m * np + j] = w3[m];
            }
        }
    }
}

/// A loess trend alone (degree 1, every point), re-weighted 15 times by STL's robustness weights
/// when `robust`: the fit of a series with no seasonal period.
pub fn robust_trend(y: &[f64], len: usize, robust: bool) -> Vec<f64> {
    let n = y.len();
    let (mut trend, mut rw) = (vec![0.0; n], vec![1.0; n]);
    let mut tricube = Tricube::default();
    let outer = if robust { 15 } else { 0 };
    for k in 0..=outer {
        loess_smooth(
            y,
            len,
            1,
            1,
            (k > 0).then_some(&rw[..]),
            &mut trend,
            &mut tricube,
        );
        if k < outer {
            robustness_weights(y, &trend, &mut rw);
        }
    }
    trend
}

/// Tricube weights by offset for the bandwidths met so far: a smoother's interior points share
/// one bandwidth and its ends cycle through a few, so each table is built once per decomposition.
#[derive(Debug, Default)]
pub(crate) struct Tricube {
    tables: Vec<TricubeTable>,
    current: usize,
}

#[derive(Debug)]
struct TricubeTable {
    h: f64,
    /// Weights at offsets −reach ..= reach (index offset + reach), and the offsets as floats.
    weights: Vec<f64>,
    offsets: Vec<f64>,
    reach: i64,
}

impl Tricube {
    /// The table of (1 − (|u|/h)³)³ for offsets |u| ≤ 0.999·h (1 within 0.001·h), as the original.
    fn table(&mut self, h: f64) -> &TricubeTable {
        let hit = |t: &TricubeTable| t.h.to_bits() == h.to_bits();
        if !self.tables.get(self.current).is_some_and(hit) {
            match self.tables.iter().position(hit) {
                Some(i) => self.current = i,
                None => {
                    self.tables.push(TricubeTable::new(h));
                    self.current = self.tables.len() - 1;
                }
            }
        }
        &self.tables[self.current]
    }
}

impl TricubeTable {
    fn new(h: f64) -> Self {
        let (h9, h1) = (0.999 * h, 0.001 * h);
        let mut half = Vec::new();
        let mut r = 0.0f64;
        while r <= h9 {
            half.push(if r <= h1 {
                1.0
            } else {
                let u = r / h;
                let v = 1.0 - u * u * u;
                v * v * v
            });
            r += 1.0;
        }
        if half.is_empty() {
            half.push(0.0);
        }
        let reach = half.len() as i64 - 1;
        Self {
            h,
            weights: half.iter().rev().chain(&half[1..]).copied().collect(),
            offsets: (-reach..=reach).map(|u| u as f64).collect(),
            reach,
        }
    }
}

/// The loess estimate at 1-based position `xs` from `y[nleft-1 .. nright]` with tricube weights
/// (times robustness weights `rw` if given) over bandwidth `len`; `None` when every weight is 0.
///
/// The original normalises the weights, then adjusts them for the local line, then sums: five
/// passes. One pass of weighted sums in offsets u from `xs` gives the same estimate
/// (Σw·y + b·(Σw·u·y − a·Σw·y)) / Σw, with a = Σw·u / Σw, b = −a / c and c the weighted variance
/// of u, to rounding (≤ 1e-11 relative on the fixtures).
#[allow(clippy::too_many_arguments)]
fn loess_at(
    y: &[f64],
    len: usize,
    deg: u8,
    xs: i64,
    nleft: usize,
    nright: usize,
    rw: Option<&[f64]>,
    tricube: &mut Tricube,
) -> Option<f64> {
    let n = y.len();
    let range = n as f64 - 1.0;
    let mut h = (xs - nleft as i64).max(nright as i64 - xs) as f64;
    if len > n {
        h += ((len - n) as f64 / 2.0).floor();
    }
    let table = tricube.table(h);
    // Offsets of the window, clipped to where the weights are not zero.
    let lo = (nleft as i64 - xs).max(-table.reach);
    let hi = (nright as i64 - xs).min(table.reach);
    if lo > hi {
        return None;
    }
    let (j0, j1) = ((xs + lo - 1) as usize, (xs + hi) as usize);
    let (k0, k1) = ((lo + table.reach) as usize, (hi + table.reach + 1) as usize);
    let sums = weighted_sums(
        &y[j0..j1],
        &table.weights[k0..k1],
        &table.offsets[k0..k1],
        rw.map(|rw| &rw[j0..j1]),
    );
    let [s0, s1, s2, sy, suy] = sums;
    if s0 <= 0.0 {
        return None;
    }
    // Two divisions, not five and a square root: they were most of a short window's cost.
    let inv = 1.0 / s0;
    if h > 0.0 && deg > 0 {
        let a = s1 * inv;
        let c = s2 * inv - a * a;
        let cut = 0.001 * range;
        if c > cut * cut {
            let b = -a / c;
            return Some((sy + b * (suy - a * sy)) * inv);
        }
    }
    Some(sy * inv)
}

/// [Σw, Σw·u, Σw·u², Σw·y, Σw·u·y] with w = k (· rw), in four lanes added in a fixed order, so
/// the compiler can use vector registers and the bits do not depend on which it uses.
fn weighted_sums(y: &[f64], k: &[f64], u: &[f64], rw: Option<&[f64]>) -> [f64; 5] {
    const L: usize = 4;
    let mut acc = [[0.0f64; L]; 5];
    let n = y.len();
    let whole = n - n % L;
    let mut add = |i: usize, lane: usize| {
        let w = match rw {
            Some(rw) => k[i] * rw[i],
            None => k[i],
        };
        let wu = w * u[i];
        let wy = w * y[i];
        acc[0][lane] += w;
        acc[1][lane] += wu;
        acc[2][lane] += wu * u[i];
        acc[3][lane] += wy;
        acc[4][lane] += wy * u[i];
    };
    for base in (0..whole).step_by(L) {
        for lane in 0..L {
            add(base + lane, lane);
        }
    }
    for i in whole..n {
        add(i, i - whole);
    }
    acc.map(|a| (a[0] + a[1]) + (a[2] + a[3]))
}

/// Loess-smooths all of `y` into `ys` (same length), evaluating every `jump`-th point and
/// interpolating linearly between; a point with no weight keeps its value.
fn loess_smooth(
    y: &[f64],
    len: usize,
    deg: u8,
    jump: usize,
    rw: Option<&[f64]>,
    ys: &mut [f64],
    tricube: &mut Tricube,
) {
    let n = y.len();
    if n < 2 {
        ys[0] = y[0];
        return;
    }
    let newnj = jump.min(n - 1);
    let mut est = |i: usize, nleft: usize, nright: usize, ys: &mut [f64]| {
        ys[i] = loess_at(y, len, deg, i as i64 + 1, nleft, nright, rw, tricube).unwrap_or(y[i]);
    };
    let (mut nleft, mut nright);
    if len >= n {
        (nleft, nright) = (1, n);
        for i in (0..n).step_by(newnj) {
            est(i, nleft, nright, ys);
        }
    } else if newnj == 1 {
        let nsh = (len + 2) / 2;
        (nleft, nright) = (1, len);
        for i in 0..n {
            if i + 1 > nsh && nright != n {
                nleft += 1;
                nright += 1;
            }
            est(i, nleft, nright, ys);
        }
    } else {
        let nsh = len.div_ceil(2);
        (nleft, nright) = (1, len);
        for i in (0..n).step_by(newnj) {
            if i + 1 < nsh {
                (nleft, nright) = (1, len);
            } else if i + 1 > n - nsh {
                (nleft, nright) = (n - len + 1, n);
            } else {
                (nleft, nright) = (i + 2 - nsh, len + i + 1 - nsh);
            }
            est(i, nleft, nright, ys);
        }
    }
    if newnj == 1 {
        return;
    }
    let mut i = 0;
    while i < n - newnj {
        let delta = (ys[i + newnj] - ys[i]) / newnj as f64;
        for j in i..i + newnj {
            ys[j] = ys[i] + delta * (j - i) as f64;
        }
        i += newnj;
    }
    let k = ((n - 1) / newnj) * newnj + 1;
    if k != n {
        est(n - 1, nleft, nright, ys);
        if k != n - 1 {
            let delta = (ys[n - 1] - ys[k - 1]) / (n - k) as f64;
            for j in k..n {
                ys[j] = ys[k - 1] + delta * ((j + 1) - k) as f64;
            }
        }
    }
}

/// Moving average of `x[..n]` over `len` into `ave[..n - len + 1]` (a running sum, as the original).
fn moving_average(x: &[f64], n: usize, len: usize, ave: &mut [f64]) {
    let flen = len as f64;
    let mut v: f64 = x[..len].iter().sum();
    ave[0] = v / flen;
    for j in 1..n - len + 1 {
        v += x[j + len - 1] - x[j - 1];
        ave[j] = v / flen;
    }
}

/// The low-pass filter's three moving averages (period, period, 3) of `x[..n]` into `out`.
fn low_pass_moving_averages(x: &[f64], n: usize, np: usize, out: &mut [f64], tmp: &mut [f64]) {
    moving_average(x, n, np, out);
    moving_average(out, n - np + 1, np, tmp);
    moving_average(tmp, n - 2 * np + 2, 3, out);
}

/// Bisquare robustness weights from |y − fit| against 6 × their median.
fn robustness_weights(y: &[f64], fit: &[f64], rw: &mut [f64]) {
    let n = y.len();
    for i in 0..n {
        rw[i] = (y[i] - fit[i]).abs();
    }
    let mut sorted = rw.to_vec();
    let (m0, m1) = (n / 2, n - n / 2 - 1);
    sorted.select_nth_unstable_by(m0, f64::total_cmp);
    let a = sorted[m0];
    let b = if m1 == m0 {
        a
    } else {
        // m1 = m0 - 1: the largest value left of m0 after the partition.
        sorted[..m0]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let cmad = 3.0 * (a + b);
    if cmad == 0.0 {
        rw.fill(1.0);
        return;
    }
    let (c9, c1) = (0.999 * cmad, 0.001 * cmad);
    for r in rw.iter_mut() {
        *r = if *r <= c1 {
            1.0
        } else if *r <= c9 {
            let u = *r / cmad;
            let v = 1.0 - u * u;
            v * v
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_statsmodels() {
        let o = StlOptions::new(24, true);
        assert_eq!((o.trend, o.low_pass), (47, 25));
        let o = StlOptions::new(12, false);
        assert_eq!((o.trend, o.low_pass, o.inner_iter), (23, 13, 5));
        assert_eq!(StlOptions::new(7, true).trend, 15);
    }

    #[test]
    fn a_pure_seasonal_series_leaves_no_residual() {
        let y: Vec<f64> = (0..96).map(|i| [3.0, 1.0, -2.0, 5.0][i % 4]).collect();
        let d = decompose(&y, &StlOptions::new(4, false));
        let r = d.residuals(&y);
        assert!(r.iter().all(|r| r.abs() < 1e-9), "{r:?}");
    }

    #[test]
    fn robust_fit_gives_a_spike_zero_weight() {
        let mut rng = crate::hashing::DeterministicRng::new(8);
        let mut y: Vec<f64> = (0..240)
            .map(|i| 0.1 * i as f64 + [0.0, 2.0, 1.0, -1.0, 0.5, -2.0][i % 6] + rng.next_f64())
            .collect();
        y[150] += 40.0;
        let d = decompose(&y, &StlOptions::new(6, true));
        assert_eq!(d.weights[150], 0.0);
        let r = d.residuals(&y);
        assert!(r[150] > 35.0, "{}", r[150]);
        assert!(r.iter().enumerate().all(|(i, r)| i == 150 || r.abs() < 2.0));
        // Without robustness the spike leaks into its cycle-subseries neighbours.
        let plain = decompose(&y, &StlOptions::new(6, false)).residuals(&y);
        assert!(plain[150] < r[150] && plain[144].abs() > r[144].abs());
    }

    #[test]
    fn jumps_interpolate_between_evaluated_points() {
        let y: Vec<f64> = (0..200)
            .map(|i| (i as f64 * 0.3).sin() * 3.0 + (i % 7) as f64)
            .collect();
        let mut o = StlOptions::new(7, false);
        let exact = decompose(&y, &o);
        (o.seasonal_jump, o.trend_jump, o.low_pass_jump) = (2, 4, 2);
        let jumped = decompose(&y, &o);
        let diff = exact
            .trend
            .iter()
            .zip(&jumped.trend)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff > 0.0 && diff < 0.5, "{diff}");
    }
}
