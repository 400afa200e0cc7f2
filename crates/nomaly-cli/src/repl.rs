//! `nomaly sql` without `-e`/`-f` on a terminal: an interactive prompt. Lines gather until a
//! statement ends with `;` (outside strings and comments), so statements span lines; history is
//! kept across sessions; an error is printed and the prompt comes back.

use crate::sql_cmd::SqlArgs;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use nomaly_engine::EngineError;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use std::path::PathBuf;

const PROMPT: &str = "nomaly> ";
const CONTINUE: &str = "     -> ";

const HELP: &str = "\
Statements end with ';' and may span lines. Tables: the --table options, or
  CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 'tx.parquet';
Try: SHOW TABLES;  DESCRIBE tx;  SELECT id, detect_anomalies('hbos', amount) AS a FROM tx LIMIT 5;
Commands: \\q (or quit, exit, Ctrl-D) leaves; \\? shows this; Ctrl-C drops the statement being typed.";

/// Where the history lives: `$XDG_STATE_HOME/nomaly/history` or `~/.local/state/nomaly/history`.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("nomaly").join("history"))
}

/// Whether `buffer` holds complete statements: its last token is `;` and no string or comment is
/// left open.
fn is_complete(buffer: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, buffer).tokenize() else {
        return false; // e.g. an unterminated string: keep reading
    };
    tokens
        .iter()
        .rev()
        .find(|t| {
            !matches!(
                t,
                Token::Whitespace(
                    Whitespace::Space
                        | Whitespace::Newline
                        | Whitespace::Tab
                        | Whitespace::SingleLineComment { .. }
                        | Whitespace::MultiLineComment(_)
                )
            )
        })
        .is_some_and(|t| matches!(t, Token::SemiColon))
}

/// Runs the prompt until `\q` or end of input.
pub async fn run(ctx: &SessionContext, args: &SqlArgs) -> Result<(), EngineError> {
    let mut editor = DefaultEditor::new().map_err(|e| {
        EngineError::DataFusion(DataFusionError::Execution(format!(
            "cannot start the interactive prompt: {e}"
        )))
    })?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("nomaly sql — statements end with ';'. \\? for help, \\q to quit.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { PROMPT } else { CONTINUE };
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        let line = match line {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: cannot read input: {e}");
                break;
            }
        };
        if buffer.is_empty() {
            match line.trim() {
                "" => continue,
                "\\q" | "quit" | "exit" | "quit;" | "exit;" => break,
                "\\?" | "help" | "\\h" => {
                    println!("{HELP}");
                    continue;
                }
                _ => {}
            }
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if !is_complete(&buffer) {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(text.as_str());
        if let Err(e) = run_text(ctx, &text, args).await {
            eprintln!("error: {}", e.user_message());
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(())
}

async fn run_text(ctx: &SessionContext, text: &str, args: &SqlArgs) -> Result<(), EngineError> {
    crate::sql_models::Script::parse(text, "input")?
        .run(ctx, args, false)
        .await
}
