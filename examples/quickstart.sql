-- Nomaly quickstart: anomaly detection in plain SQL on bundled example data.
-- Run: cargo run --release -p nomaly-cli -- sql -f examples/quickstart.sql
CREATE EXTERNAL TABLE tx STORED AS CSV LOCATION 'examples/data/tx.csv' OPTIONS ('format.has_header' 'true');

-- 1. Score every row with an isolation forest; show the 10 most anomalous transactions.
SELECT id, merchant, amount, latency_ms, label,
       round(detect_anomalies('iforest', amount, latency_ms, 'seed=7')['score'], 4) AS score
FROM tx
ORDER BY score DESC, id
LIMIT 10;

-- 2. One ECOD model per merchant; how many flagged per merchant, and how many were labelled?
SELECT merchant, count(*) AS rows, sum(CASE WHEN a.is_anomaly THEN 1 ELSE 0 END) AS flagged, sum(label) AS labelled
FROM (SELECT merchant, label,
             detect_anomalies('ecod', amount, latency_ms, 'contamination=0.02') OVER (PARTITION BY merchant) AS a
      FROM tx)
GROUP BY merchant
ORDER BY merchant;

-- 3. Fit once, score many: keep the model as a value, explain the top rows.
CREATE TABLE model AS SELECT fit_detector('hbos', amount, latency_ms) AS m FROM tx;
SELECT anomaly_model_info(m) AS model FROM model;
SELECT t.id, round(anomaly_score(model.m, t.amount, t.latency_ms), 3) AS score,
       anomaly_explain(model.m, t.amount, t.latency_ms) AS per_feature
FROM model CROSS JOIN tx t
ORDER BY score DESC, t.id
LIMIT 5;
