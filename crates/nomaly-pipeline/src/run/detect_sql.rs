//! The detect step as SQL over the run's session: `fit_detector` as an aggregate (grouped by the
//! segment keys), and `anomaly_detect(model, ...)` over the models table joined to the input.

use super::{quote_ident, quote_str};
use crate::compile::Detect;

/// Name of the fitted-models table in a run's session.
pub(crate) const MODELS: &str = "__nomaly_models";

pub(crate) fn fit_sql(d: &Detect, input: &str) -> String {
    let keys: Vec<String> = d
        .partition_by
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} AS \"__nomaly_k{i}\"", quote_ident(k)))
        .collect();
    let mut args = vec![quote_str(d.algorithm.name())];
    args.extend(d.columns.iter().map(|c| quote_ident(c)));
    if !d.options.trim().is_empty() {
        args.push(quote_str(&d.options));
    }
    let mut sql = format!(
        "SELECT {}fit_detector({}) AS model FROM {input}",
        keys.iter().map(|k| format!("{k}, ")).collect::<String>(),
        args.join(", ")
    );
    if !keys.is_empty() {
        let groups: Vec<String> = (0..keys.len())
            .map(|i| format!("\"__nomaly_k{i}\""))
            .collect();
        sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
    }
    sql
}

pub(crate) fn score_sql(d: &Detect, input: &str) -> String {
    let cols: Vec<String> = d
        .columns
        .iter()
        .map(|c| format!("i.{}", quote_ident(c)))
        .collect();
    let cols = cols.join(", ");
    let explain_inner = if d.explain {
        format!(", anomaly_explain(m.model, {cols}) AS \"__nomaly_e\"")
    } else {
        String::new()
    };
    let join = if d.partition_by.is_empty() {
        format!("{MODELS} AS m CROSS JOIN {input} AS i")
    } else {
        let on: Vec<String> = d
            .partition_by
            .iter()
            .enumerate()
            .map(|(n, k)| {
                format!(
                    "i.{} IS NOT DISTINCT FROM m.\"__nomaly_k{n}\"",
                    quote_ident(k)
                )
            })
            .collect();
        format!("{MODELS} AS m JOIN {input} AS i ON {}", on.join(" AND "))
    };
    let (exclude, explain_outer) = if d.explain {
        (
            "\"__nomaly_a\", \"__nomaly_e\"",
            ", \"__nomaly_e\" AS anomaly_explanation",
        )
    } else {
        ("\"__nomaly_a\"", "")
    };
    format!(
        "SELECT * EXCLUDE ({exclude}), \"__nomaly_a\"['score'] AS anomaly_score, \"__nomaly_a\"['is_anomaly'] AS is_anomaly{explain_outer} \
         FROM (SELECT i.*, anomaly_detect(m.model, {cols}) AS \"__nomaly_a\"{explain_inner} FROM {join})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nomaly_detectors::Algorithm;

    fn detect(partition_by: Vec<String>, explain: bool) -> Detect {
        Detect {
            algorithm: Algorithm::ZScore,
            columns: vec!["amount".into(), "lat\"ency".into()],
            options: "contamination=0.05".into(),
            input: "tx".into(),
            partition_by,
            explain,
            place: "p.toml".into(),
        }
    }

    #[test]
    fn generated_sql_quotes_names() {
        let d = detect(vec!["merchant".into()], false);
        assert_eq!(
            fit_sql(&d, "\"tx\""),
            "SELECT \"merchant\" AS \"__nomaly_k0\", fit_detector('zscore', \"amount\", \"lat\"\"ency\", 'contamination=0.05') AS model FROM \"tx\" GROUP BY \"__nomaly_k0\""
        );
        let s = score_sql(&d, "\"tx\"");
        assert!(
            s.contains("ON i.\"merchant\" IS NOT DISTINCT FROM m.\"__nomaly_k0\""),
            "{s}"
        );
        assert!(score_sql(&detect(vec![], true), "t").contains("anomaly_explain(m.model"));
    }
}
