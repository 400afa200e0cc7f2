//! `CREATE [OR REPLACE] MODEL name USING algorithm[(options)] AS query`, `DROP MODEL [IF EXISTS]
//! name`, `SHOW MODELS`: statements DataFusion's parser does not know, recognised before it runs
//! (a pre-parse of the statement's first words) and carried out against the model registry that
//! pipelines use ([`crate::models::Registry`]), so one catalog serves both: a model created in SQL
//! scores in a pipeline (`[detect] model`), and one a pipeline trained scores in SQL by name
//! (`anomaly_score('fraud', ...)`, [`nomaly_udfs::model_names`]).
//!
//! [`split`] cuts a script into statements at `;` (outside strings and comments, by
//! sqlparser's tokenizer) and parses the model statements; every other statement is handed on as
//! its text, blanked before and after so DataFusion's error positions stay the script's own.

mod run;

pub use run::{RegistryResolver, attach_registry, execute};

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// A model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    Create {
        name: String,
        or_replace: bool,
        algorithm: String,
        /// The options between the parentheses (`contamination=0.05, seed=7`), as written.
        options: String,
        /// The training query; its columns are the features.
        query: String,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Show,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Model(ModelStatement),
    /// Any other statement: the script with everything outside it blanked (newlines kept).
    Sql(String),
}

/// The grammar, for errors.
const CREATE_FORM: &str =
    "CREATE [OR REPLACE] MODEL name USING algorithm[(key=value, ...)] AS SELECT ...";

/// The statements of `sql` (`source` names it in errors: `-e`, a file); `None` when none is a
/// model statement, so the caller parses the script as it always has.
pub fn split(sql: &str, source: &str) -> Result<Option<Vec<Piece>>, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| format!("{source}: cannot parse SQL: {e}"))?;
    let offsets = LineOffsets::new(sql);
    let mut pieces = Vec::new();
    let mut any_model = false;
    for statement in tokens.split(|t| t.token == Token::SemiColon) {
        let words: Vec<&TokenWithSpan> = statement.iter().filter(|t| !is_blank(&t.token)).collect();
        let (Some(first), Some(last)) = (words.first(), words.last()) else {
            continue;
        };
        let start = offsets.byte(first.span.start.line, first.span.start.column);
        let end = offsets.byte(last.span.end.line, last.span.end.column);
        match parse_model(&words, sql, &offsets) {
            Ok(Some(m)) => {
                any_model = true;
                pieces.push(Piece::Model(m));
            }
            Ok(None) => pieces.push(Piece::Sql(blank_outside(sql, start, end))),
            Err(e) => {
                let at = first.span.start;
                return Err(format!(
                    "{source}: line {}, column {}: {e}",
                    at.line, at.column
                ));
            }
        }
    }
    Ok(any_model.then_some(pieces))
}

/// Whitespace and comments (the tokenizer's `Whitespace` holds both).
fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

fn word<'a>(t: Option<&&'a TokenWithSpan>) -> Option<&'a str> {
    match t.map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.as_str()),
        _ => None,
    }
}

fn keyword(t: Option<&&TokenWithSpan>, k: &str) -> bool {
    matches!(t.map(|t| &t.token), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k))
}

/// A model name: a word, or a quoted name.
fn name_of(t: Option<&&TokenWithSpan>) -> Option<String> {
    match t.map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.clone()),
        Some(Token::SingleQuotedString(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The model statement these significant tokens make, `None` if they are not one.
fn parse_model(
    words: &[&TokenWithSpan],
    sql: &str,
    offsets: &LineOffsets,
) -> Result<Option<ModelStatement>, String> {
    let at = |i: usize| words.get(i);
    if keyword(at(0), "SHOW") && keyword(at(1), "MODELS") {
        if words.len() > 2 {
            return Err("SHOW MODELS takes nothing after it".into());
        }
        return Ok(Some(ModelStatement::Show));
    }
    if keyword(at(0), "DROP") && keyword(at(1), "MODEL") {
        let if_exists = keyword(at(2), "IF") && keyword(at(3), "EXISTS");
        let i = if if_exists { 4 } else { 2 };
        let Some(name) = name_of(at(i)) else {
            return Err("DROP MODEL [IF EXISTS] name: expected the model's name".into());
        };
        if words.len() > i + 1 {
            return Err(format!("DROP MODEL {name}: nothing may follow the name"));
        }
        return Ok(Some(ModelStatement::Drop { name, if_exists }));
    }
    if !keyword(at(0), "CREATE") {
        return Ok(None);
    }
    let or_replace = keyword(at(1), "OR") && keyword(at(2), "REPLACE");
    let mut i = if or_replace { 3 } else { 1 };
    if !keyword(at(i), "MODEL") {
        return Ok(None);
    }
    let expected = |what: &str| format!("{CREATE_FORM}: expected {what}");
    let name = name_of(at(i + 1)).ok_or_else(|| expected("the model's name after MODEL"))?;
    if !keyword(at(i + 2), "USING") {
        return Err(expected("USING after the name"));
    }
    let algorithm = word(at(i + 3)).ok_or_else(|| expected("an algorithm after USING"))?;
    i += 4;
    let mut options = String::new();
    if matches!(at(i).map(|t| &t.token), Some(Token::LParen)) {
        let open = i;
        let mut depth = 0;
        loop {
            match at(i).map(|t| &t.token) {
                Some(Token::LParen) => depth += 1,
                Some(Token::RParen) => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                Some(_) => {}
                None => return Err(expected("')' closing the options")),
            }
            i += 1;
        }
        let from = words[open].span.end;
        let to = words[i].span.start;
        options = sql[offsets.byte(from.line, from.column)..offsets.byte(to.line, to.column)]
            .trim()
            .to_string();
        i += 1;
    }
    if !keyword(at(i), "AS") {
        return Err(expected("AS and the training query"));
    }
    let Some(first) = at(i + 1) else {
        return Err(expected("the training query after AS"));
    };
    let last = words[words.len() - 1];
    let query = sql[offsets.byte(first.span.start.line, first.span.start.column)
        ..offsets.byte(last.span.end.line, last.span.end.column)]
        .to_string();
    Ok(Some(ModelStatement::Create {
        name,
        or_replace,
        algorithm: algorithm.to_string(),
        options,
        query,
    }))
}

/// Byte offsets of (1-based line, 1-based column in characters) positions.
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { sql, starts }
    }

    fn byte(&self, line: u64, column: u64) -> usize {
        let Some(&start) = self.starts.get((line as usize).saturating_sub(1)) else {
            return self.sql.len();
        };
        self.sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map_or(self.sql.len(), |(i, _)| start + i)
    }
}

/// `sql[start..end]` where it stands in `sql`: the lines before it as newlines, its column as
/// spaces, and the lines after it as newlines (no copy of the other statements' text, so a long
/// script costs its line count per statement, not its length).
fn blank_outside(sql: &str, start: usize, end: usize) -> String {
    let before = &sql[..start];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut out = "\n".repeat(before.matches('\n').count());
    out.extend(std::iter::repeat_n(
        ' ',
        before[line_start..].chars().count(),
    ));
    out.push_str(&sql[start..end]);
    out.push_str(&"\n".repeat(sql[end..].matches('\n').count()));
    // the script's last line, when text follows on it, stays a (blank) line
    if !sql[end..].is_empty() && !sql.ends_with('\n') {
        out.push(' ');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_statements_are_recognised_and_others_pass_through() {
        let sql = "SELECT 1;\n-- train\ncreate or replace model fraud using iforest(n_trees=50, \
                   contamination=0.05) as SELECT a, b FROM t WHERE x = ';';\nSHOW MODELS;\
                   DROP MODEL IF EXISTS 'old-one'";
        let pieces = split(sql, "-e").unwrap().unwrap();
        assert_eq!(pieces.len(), 4);
        let Piece::Sql(first) = &pieces[0] else {
            panic!("{pieces:?}")
        };
        assert_eq!(first.trim(), "SELECT 1");
        assert_eq!(first.lines().count(), sql.lines().count());
        assert_eq!(
            pieces[1],
            Piece::Model(ModelStatement::Create {
                name: "fraud".into(),
                or_replace: true,
                algorithm: "iforest".into(),
                options: "n_trees=50, contamination=0.05".into(),
                query: "SELECT a, b FROM t WHERE x = ';'".into(),
            })
        );
        assert_eq!(pieces[2], Piece::Model(ModelStatement::Show));
        assert_eq!(
            pieces[3],
            Piece::Model(ModelStatement::Drop {
                name: "old-one".into(),
                if_exists: true
            })
        );
        assert_eq!(
            split("SELECT 1; CREATE TABLE t AS SELECT 2", "-e"),
            Ok(None)
        );
    }

    #[test]
    fn malformed_model_statements_say_where_and_what() {
        for (sql, want) in [
            (
                "CREATE MODEL m iforest AS SELECT 1",
                "line 1, column 1: CREATE [OR REPLACE] MODEL name USING",
            ),
            (
                "SELECT 1;\n  CREATE MODEL m USING iforest(n_trees=5 AS SELECT 1",
                "line 2, column 3",
            ),
            (
                "CREATE MODEL m USING ecod",
                "expected AS and the training query",
            ),
            ("DROP MODEL", "expected the model's name"),
            ("SHOW MODELS now", "SHOW MODELS takes nothing after it"),
        ] {
            let e = split(sql, "-e").unwrap_err();
            assert!(e.contains(want), "{sql}: {e}");
            assert!(e.starts_with("-e: line"), "{e}");
        }
    }
}
