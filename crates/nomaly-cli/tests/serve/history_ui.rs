//! The dashboard's history views in Chromium: the runs list filtered and paged, a pipeline's page
//! (history charts, run now, backfill), and a run's page (log panel, top-scored rows).

use super::backfills::daily_example;
use super::browser::Browser;
use super::{Fixture, Served};
use crate::pipeline::models::training_pipeline;

#[test]
fn the_dashboard_filters_pages_charts_runs_now_and_shows_logs_and_top_rows() {
    let f = Fixture::new();
    let daily = daily_example(f.path());
    let token = "history-token";
    let server = Served::start(f.path(), &[], &[("NOMALY_TOKEN", token)]);
    let path = daily.to_str().unwrap();
    let days = [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
        "2026-01-04",
        "2026-01-05",
        "2026-01-06",
    ];
    let mut ids = Vec::new();
    for day in days {
        ids.push(server.submit(serde_json::json!({"path": path, "date": day})));
    }
    let other = f.pipeline("other", "out_other", "hbos", "");
    let other_run = server.submit(serde_json::json!({"path": other.to_str().unwrap()}));
    for id in ids.iter().chain([&other_run]) {
        assert_eq!(server.wait_ended(*id)["state"], "succeeded");
    }

    let browser = Browser::start();
    browser.goto(&server.url());
    browser.wait_for(
        "the token dialog",
        "return document.getElementById('token-dialog').open === true",
    );
    browser.type_into("#token-input", token);
    browser.click("#token-form button");
    browser.wait_for(
        "the runs view",
        "return document.getElementById('page-info') !== null",
    );

    filter_and_page(&browser);

    // A pipeline's page: its history as charts; run now and backfill queue runs.
    browser.click("a[href='#/pipelines/daily']");
    browser.wait_for("the pipeline page", "return document.querySelector('h1').textContent === 'Pipeline daily' && document.querySelectorAll('#history-charts polyline').length === 3");
    browser.wait_for(
        "its six runs",
        "return document.querySelectorAll('#pipeline-runs tbody tr').length === 6",
    );
    browser.audit("pipeline");
    browser.screenshot("pipeline-history");
    browser.eval("document.getElementById('backfill-from').value = '2026-01-06'; document.getElementById('backfill-to').value = '2026-01-07'; return true");
    browser.click("#backfill-go");
    browser.wait_for(
        "the backfill's two runs",
        "return document.querySelectorAll('#pipeline-runs tbody tr').length === 8",
    );
    // The backfill is one item, which ends with both its runs.
    browser.click("a[href='#/backfills']");
    browser.wait_for("the backfill, done", "const r = document.getElementById('backfill-1'); return r !== null && r.textContent.includes('2 of 2') && r.textContent.includes('2 succeeded')");
    browser.audit("backfills");
    browser.goto(&format!("{}/#/pipelines/other", server.url()));
    browser.wait_for(
        "the other pipeline",
        "return document.querySelectorAll('#pipeline-runs tbody tr').length === 1",
    );
    browser.click("#run-now");
    browser.wait_for(
        "the run queued now",
        "return document.querySelectorAll('#pipeline-runs tbody tr').length === 2",
    );

    models_and_since(&browser, &server, f.path());

    // A run's page: its log and its top-scored rows.
    let first = ids[0];
    browser.goto(&format!("{}/#/runs/{first}", server.url()));
    browser.wait_for("the log", "return (document.getElementById('log') || {}).textContent?.includes('finished succeeded') === true");
    browser.wait_for(
        "ten top rows",
        "return document.querySelectorAll('#top-rows tbody tr').length === 10",
    );
    let scores = browser.eval(
        "const h = [...document.querySelectorAll('#top-rows th')].map((t) => t.textContent).indexOf('anomaly_score'); \
         return [...document.querySelectorAll('#top-rows tbody tr')].map((r) => Number(r.children[h].textContent))",
    );
    let scores: Vec<f64> = scores
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "highest first: {scores:?}"
    );
    assert_eq!(
        browser.eval("return document.getElementById('run-date').textContent"),
        "2026-01-01"
    );
    browser.audit("run-log-top-rows");
    browser.screenshot("run-log-top-rows");
}

/// The runs list filtered by pipeline, then paged five at a time.
fn filter_and_page(browser: &Browser) {
    let info = "document.getElementById('page-info').textContent";
    browser.type_into("#filter-pipeline", "daily");
    // A live redraw before Filter is pressed keeps what was typed.
    browser.eval(
        "document.getElementById('filter-pipeline').dataset.old = 'yes'; route(); return true",
    );
    browser.wait_for(
        "a redraw that kept the typed text",
        "const i = document.getElementById('filter-pipeline'); return i !== null && !i.dataset.old && i.value === 'daily'",
    );
    browser.click("#filter-apply");
    browser.wait_for("six daily runs", &format!("return {info} === '1–6 of 6'"));
    browser.eval("const s = document.getElementById('page-size'); s.value = '5'; s.dispatchEvent(new Event('change')); return true");
    browser.wait_for("the first page", &format!("return {info} === '1–5 of 6' && document.querySelectorAll('#runs-body tr').length === 5"));
    browser.audit("runs-filtered");
    browser.click("#next-page");
    browser.wait_for(
        "the second page",
        &format!("return {info} === '6–6 of 6' && document.getElementById('next-page').disabled"),
    );
    browser.screenshot("runs-filtered-paged");
}

/// A served training run's version in the Models view; a since-filter that matches no run.
fn models_and_since(browser: &Browser, server: &Served, dir: &std::path::Path) {
    let info = "document.getElementById('page-info').textContent";
    let train =
        server.submit(serde_json::json!({"path": training_pipeline(dir), "date": "2026-01-31"}));
    assert_eq!(server.wait_ended(train)["state"], "succeeded");
    browser.click("a[href='#/models']");
    browser.wait_for("model fraud v1", "const r = document.getElementById('model-fraud-v1'); return r !== null && r.textContent.includes('6,000') && r.textContent.includes('2026-01-31')");
    browser.audit("models");

    // Runs submitted since 2099: none. The values are set and submitted in one script, so a
    // live redraw in between cannot reset them.
    browser.click("a[href='#/runs']");
    browser.wait_for(
        "the runs filters",
        "return document.getElementById('run-filters') !== null",
    );
    browser.eval(
        "document.getElementById('filter-pipeline').value = ''; \
         document.getElementById('filter-since').value = '2099-01-01'; \
         document.getElementById('run-filters').requestSubmit(); return true",
    );
    browser.wait_for("no runs since 2099", &format!("return {info} === '0 runs'"));
}
