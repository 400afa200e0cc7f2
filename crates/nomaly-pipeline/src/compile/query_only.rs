//! Pipeline SQL is a query, not a statement (SECURITY.md, "Pipeline SQL").
//!
//! A pipeline file may come from someone the operator does not trust (`nomaly serve` runs what is
//! submitted). Its `[[step]]` and `[[validate]] check = "sql"` texts are read by DataFusion, which
//! would also run `CREATE EXTERNAL TABLE … LOCATION` (read any file), `COPY … TO` (write any
//! file) and `SET` (change the session). So each text must parse as exactly one query
//! (`SELECT`, `WITH`, `VALUES`, set operations of those); anything else is a compile error naming
//! the place and the statement kind. At run time the same texts are planned with
//! [`query_options`], which refuses DDL, DML and statements again, so a text that reaches a
//! session another way cannot run one either.

use crate::error::{PipelineError, Result};
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

/// The options every pipeline query is planned with: no DDL, no DML, no statements.
pub fn query_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Checks that `sql` is exactly one query. `what` names it for the message ("step 'clean'").
pub fn check_query(sql: &str, place: &str, what: &str) -> Result<()> {
    let statements = DFParser::parse_sql(sql).map_err(|e| {
        PipelineError::invalid(place, format!("{what}: the SQL does not parse: {e}"))
    })?;
    match statements.len() {
        0 => Err(PipelineError::invalid(
            place,
            format!("{what} holds no SQL; write a query such as SELECT * FROM input"),
        )),
        1 => match statement_kind(&statements[0]) {
            None => Ok(()),
            Some(kind) => Err(PipelineError::invalid(
                place,
                format!(
                    "{what} is {} {kind} statement; pipeline SQL must be a query (SELECT, WITH or \
                     VALUES). Statements that create tables, write files or change settings are \
                     refused in pipelines (SECURITY.md); the operator can run them with `nomaly sql`",
                    article(&kind)
                ),
            )),
        },
        n => Err(PipelineError::invalid(
            place,
            format!(
                "{what} holds {n} statements; give one query (a `;` ends the text, nothing may \
                 follow it)"
            ),
        )),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// `None` for a query, else the statement's kind as SQL spells it ("COPY", "CREATE TABLE").
fn statement_kind(statement: &Statement) -> Option<String> {
    match statement {
        Statement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => None,
            other => Some(leading_keywords(&other.to_string())),
        },
        Statement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".into()),
        Statement::CopyTo(_) => Some("COPY".into()),
        Statement::Explain(_) => Some("EXPLAIN".into()),
        Statement::Reset(_) => Some("RESET".into()),
    }
}

/// The statement's keywords up to its first name: "CREATE OR REPLACE VIEW", "INSERT INTO".
fn leading_keywords(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .take(4)
        .collect();
    if words.is_empty() {
        text.split_whitespace().next().unwrap_or("").to_string()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        check_query(sql, "p.toml:3:1 [[step]] #1 sql", "step 's'")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select * from t where x > 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "VALUES (1, 2), (3, 4)",
            "SELECT 1 UNION ALL SELECT 2",
            "(SELECT 1)",
            "SELECT 1;",
        ] {
            check_query(sql, "p", "step").unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn statements_are_refused_by_kind() {
        for (sql, kind) in [
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("COPY t TO '/tmp/x.parquet' STORED AS PARQUET", "COPY"),
            ("INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE t", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("DELETE FROM t", "DELETE FROM"),
        ] {
            let e = refused(sql);
            assert!(
                e.contains(&format!("step 's' is {} {kind} statement", article(kind))),
                "{sql}: {e}"
            );
            assert!(e.starts_with("p.toml:3:1 [[step]] #1 sql: "), "{e}");
        }
    }

    #[test]
    fn a_second_statement_is_refused() {
        let e = refused("SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'");
        assert!(e.contains("holds 2 statements"), "{e}");
        assert!(refused("").contains("holds no SQL"));
        assert!(refused("SELEC 1").contains("does not parse"));
    }
}
