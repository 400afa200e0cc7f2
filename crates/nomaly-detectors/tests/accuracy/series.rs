//! The series detectors against statsmodels STL, Rosner's ESD (SciPy's t quantiles) and pandas
//! rolling medians, on the fixtures of `benchmarks/reference/make_series_fixtures.py`: STL
//! residual scores equal up to rounding (relative difference ≤ 1e-9), ESD statistics likewise and
//! its anomalies exactly, rolling scores equal.

use super::{fixture, labels, roc_auc};
use nomaly_detectors::series::{self, SeriesDetector, SeriesOptions, esd, period};
use serde_json::Value;

fn optional(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(Value::as_f64).collect()
}

/// The largest difference relative to max(|reference|, 1) (scores near 0 differ in absolute
/// terms); a None on one side only is a failure (+Infinity).
fn max_relative(ours: &[Option<f64>], reference: &[Option<f64>]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() / b.abs().max(1.0),
            (None, None) => 0.0,
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}

fn options(detector: SeriesDetector, text: &str) -> SeriesOptions {
    SeriesOptions::parse(detector, "test", text).unwrap()
}

#[test]
fn series_detectors_agree_with_statsmodels_scipy_and_pandas() {
    let mut failures = Vec::new();
    for name in ["hourly", "monthly", "weekly"] {
        let f = fixture(&format!("series_{name}"));
        let values = optional(&f["values"]);
        let labels = labels(&f["labels"]);
        let p = f["period"].as_u64().unwrap() as usize;
        for (key, text) in [
            ("stl_robust", format!("period={p}")),
            ("stl_plain", format!("period={p}, robust=false")),
            (
                "stl_jumps",
                format!("period={p}, seasonal_jump=2, trend_jump=5, low_pass_jump=3"),
            ),
            (
                "stl_fast",
                format!("period={p}, trend_jump=5, low_pass_jump=3, inner_iter=1, outer_iter=5"),
            ),
        ] {
            let ours = series::seasonal_scores(&values, &options(SeriesDetector::Seasonal, &text));
            let reference = optional(&f[key]);
            let diff = max_relative(&ours, &reference);
            let present: Vec<usize> = (0..values.len()).filter(|i| values[*i].is_some()).collect();
            let auc = |s: &[Option<f64>]| {
                let s: Vec<f64> = present.iter().map(|i| s[*i].unwrap()).collect();
                let l: Vec<i64> = present.iter().map(|i| labels[*i]).collect();
                roc_auc(&s, &l)
            };
            println!(
                "{name} {key}: max relative difference {diff:.2e}, auc ours {:.4} ref {:.4}",
                auc(&ours),
                auc(&reference)
            );
            if diff > 1e-9 {
                failures.push(format!("{name} {key}: {diff:e}"));
            }
        }
        // ESD on statsmodels' robust residual (minus its median), step by step.
        let resid = optional(&f["stl_residual"]);
        let mut centred: Vec<f64> = resid.iter().flatten().copied().collect();
        centred.sort_by(f64::total_cmp);
        let med = centred[centred.len() / 2] * 0.5 + centred[(centred.len() - 1) / 2] * 0.5;
        let input: Vec<Option<f64>> = resid
            .iter()
            .zip(&values)
            .map(|(r, v)| v.and(r.map(|r| r - med)))
            .collect();
        let steps = esd::esd_steps(&input, 0.1, 0.05);
        let e = &f["esd_on_residual"];
        let (stat, crit) = (optional(&e["statistic"]), optional(&e["critical"]));
        let ours_stat: Vec<Option<f64>> = steps.iter().map(|s| Some(s.statistic)).collect();
        let ours_crit: Vec<Option<f64>> = steps.iter().map(|s| Some(s.critical)).collect();
        let removed: Vec<u64> = e["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let ours_removed: Vec<u64> = steps.iter().map(|s| s.index as u64).collect();
        let flags: Vec<Option<bool>> = e["flags"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&values)
            .map(|(v, x)| x.map(|_| v.as_i64() == Some(1)))
            .collect();
        let ours_flags = esd::esd_flags(&input, 0.1, 0.05);
        let (ds, dc) = (
            max_relative(&ours_stat, &stat),
            max_relative(&ours_crit, &crit),
        );
        println!(
            "{name} esd: {} steps, statistic max relative difference {ds:.2e}, critical {dc:.2e}, anomalies ours {} ref {}",
            steps.len(),
            ours_flags.iter().filter(|f| **f == Some(true)).count(),
            flags.iter().filter(|f| **f == Some(true)).count()
        );
        // The same anomalies through the option: ESD on our own robust STL residual.
        let seasonal_esd = series::esd_flags(
            &values,
            &options(SeriesDetector::Esd, &format!("period={p}")),
        );
        if ds > 1e-9
            || dc > 1e-9
            || ours_removed != removed
            || ours_flags != flags
            || seasonal_esd != flags
        {
            failures.push(format!("{name} esd"));
        }
        let r = &f["rolling"];
        let (w, warm) = (r["window"].as_u64().unwrap(), r["warmup"].as_u64().unwrap());
        let ours = series::series_scores(
            &values,
            &options(
                SeriesDetector::Rolling,
                &format!("window={w}, warmup={warm}"),
            ),
        );
        let diff = max_relative(&ours, &optional(&r["scores"]));
        println!("{name} rolling (window {w}, warm-up {warm}): max relative difference {diff:.2e}");
        if diff > 1e-12 {
            failures.push(format!("{name} rolling: {diff:e}"));
        }
        let filled = series::filled(&values).unwrap();
        let detected = period::detect_period(&filled, 1000);
        println!("{name}: detected period {detected:?} (generated with {p})");
        if detected != Some(p) {
            failures.push(format!("{name}: period {detected:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
