use super::*;
use crate::hashing::DeterministicRng;

/// Hourly-like series: trend + a period-24 wave + noise.
fn series(n: usize, seed: u64) -> Vec<Option<f64>> {
    let mut rng = DeterministicRng::new(seed);
    (0..n)
        .map(|t| {
            let phase = 2.0 * std::f64::consts::PI * (t % 24) as f64 / 24.0;
            Some(0.02 * t as f64 + 5.0 * phase.sin() + rng.next_f64() - 0.5)
        })
        .collect()
}

fn top(scores: &[Option<f64>]) -> usize {
    (0..scores.len())
        .max_by(|a, b| {
            scores[*a]
                .unwrap_or(-1.0)
                .total_cmp(&scores[*b].unwrap_or(-1.0))
        })
        .unwrap()
}

#[test]
fn seasonal_finds_a_spike_with_a_given_or_detected_period() {
    let mut v = series(480, 1);
    v[300] = v[300].map(|x| x + 6.0);
    for text in ["period=24", "", "period=auto, robust=false"] {
        let o = SeriesOptions::parse(SeriesDetector::Seasonal, "f", text).unwrap();
        let s = seasonal_scores(&v, &o);
        assert_eq!(top(&s), 300, "{text}");
        assert!(s[300].unwrap() > 8.0, "{text}: {:?}", s[300]);
    }
}

#[test]
fn seasonal_anomaly_is_odd_for_its_hour_not_for_the_table() {
    // A value normal for the table (within the wave's range) but at the wrong phase.
    let mut v = series(480, 2);
    v[250] = Some(0.02 * 250.0 + 4.5); // hour 10 of 24 expects about +2.5 (sin 150°)
    let o = SeriesOptions::parse(SeriesDetector::Seasonal, "f", "period=24").unwrap();
    let s = seasonal_scores(&v, &o);
    assert_eq!(top(&s), 250);
    let plain = robust_z(&v);
    assert!(plain[250].unwrap() < 1.5, "{:?}", plain[250]);
}

#[test]
fn missing_values_score_null_and_do_not_break_the_fit() {
    let mut v = series(240, 3);
    for i in [0, 5, 6, 7, 100, 239] {
        v[i] = None;
    }
    v[150] = v[150].map(|x| x + 8.0);
    let o = SeriesOptions::parse(SeriesDetector::Seasonal, "f", "period=24").unwrap();
    let s = seasonal_scores(&v, &o);
    for i in [0, 5, 6, 7, 100, 239] {
        assert_eq!(s[i], None);
    }
    assert_eq!(top(&s), 150);
    assert_eq!(
        filled(&[None, Some(1.0), None, None, Some(4.0), None]).unwrap(),
        [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    );
    assert_eq!(filled(&[None, None]), None);
}

#[test]
fn short_series_and_no_period() {
    let v = series(40, 4);
    let o = SeriesOptions::parse(SeriesDetector::Seasonal, "f", "period=24").unwrap();
    assert!(seasonal_scores(&v, &o).iter().all(Option::is_none));
    // No period in a trend with a level shift: the trend fallback still scores every row.
    let mut rng = DeterministicRng::new(5);
    let mut w: Vec<Option<f64>> = (0..300)
        .map(|t| Some(0.1 * t as f64 + rng.next_f64()))
        .collect();
    w[120] = Some(w[120].unwrap() + 9.0);
    let o = SeriesOptions::parse(SeriesDetector::Seasonal, "f", "").unwrap();
    let s = seasonal_scores(&w, &o);
    assert!(s.iter().all(Option::is_some));
    assert_eq!(top(&s), 120);
    assert_eq!(seasonal_scores(&[Some(3.0)], &o), [Some(0.0)]);
}

#[test]
fn options_are_checked() {
    let err = |t: &str, d| {
        SeriesOptions::parse(d, "anomaly_score_seasonal", t)
            .unwrap_err()
            .to_string()
    };
    assert!(err("perod=24", SeriesDetector::Seasonal).contains("did you mean 'period'"));
    assert!(err("period=1", SeriesDetector::Seasonal).contains("integer ≥ 2"));
    assert!(err("seasonal=8", SeriesDetector::Seasonal).contains("odd"));
    assert!(err("trend=25", SeriesDetector::Seasonal).contains("give period=N"));
    assert!(
        err("period=24, trend=23", SeriesDetector::Seasonal).contains("greater than period (24)")
    );
    assert!(err("window=10, warmup=11", SeriesDetector::Rolling).contains("at most window (10)"));
    assert!(err("alpha=1", SeriesDetector::Esd).contains("(0, 1)"));
    assert!(err("max_anoms=0.6", SeriesDetector::Esd).contains("(0, 0.5]"));
    assert!(err("window=5", SeriesDetector::Esd).contains("valid options are: max_anoms, alpha"));
    let o = SeriesOptions::parse(
        SeriesDetector::Seasonal,
        "f",
        "period=12, seasonal=9, trend_jump=3, robust=false",
    )
    .unwrap();
    let stl = o.stl(12);
    assert_eq!(
        (
            stl.seasonal,
            stl.trend,
            stl.low_pass,
            stl.trend_jump,
            stl.outer_iter
        ),
        (9, 23, 13, 3, 0)
    );
}
