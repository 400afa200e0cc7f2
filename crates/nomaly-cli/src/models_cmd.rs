//! `nomaly models list | show | rm`: the model registry beside pipeline files
//! (`.nomaly-state/models/`), where `[detect] model` and `train` keep fitted models.

use clap::{Args, Subcommand};
use nomaly_pipeline::models::{ModelVersion, Registry};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "A run with [detect] train = \"SELECT ...\" and model = \"NAME\" registers its fit as the
next version of NAME when it succeeds; a run with model = \"NAME\" and no train scores with the
latest version (or version = N) and reports how far its scores drifted from the version's training
scores (population-stability index).

Examples:
  nomaly models list
  nomaly models show fraud --version 2 --json
  nomaly models rm fraud --version 1
  nomaly models list --dir pipelines/     # the registry of the pipeline files in pipelines/"
)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Every version of every model: name, version, algorithm, training rows and interval, size
    List {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        json: bool,
    },
    /// One version (the latest by default), with its training scores' deciles
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        json: bool,
    },
    /// Remove one version, or every version of a model
    Rm {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        place: Place,
    },
}

#[derive(Args, Debug)]
struct Place {
    /// The directory of the pipeline files whose registry this is
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

fn line(m: &ModelVersion) -> String {
    format!(
        "{:<16} v{:<4} {:<14} {:>10} training rows  trained by {} for {}  {:>9} bytes  made {}",
        m.name,
        m.version,
        m.algorithm,
        m.training_rows,
        m.pipeline,
        day(m.interval_start_ms),
        m.size_bytes,
        day(m.created_at_unix_ms as i64)
    )
}

pub fn models(args: ModelsArgs) -> i32 {
    let result = match args.command {
        ModelsCommand::List { place, json } => Registry::beside(&place.dir).list().map(|all| {
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else if all.is_empty() {
                eprintln!(
                    "no models registered in {}",
                    Registry::beside(&place.dir).root.display()
                );
            } else {
                all.iter().for_each(|m| println!("{}", line(m)));
            }
        }),
        ModelsCommand::Show {
            name,
            version,
            place,
            json,
        } => Registry::beside(&place.dir)
            .get(&name, version)
            .map(|(m, _, _)| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                } else {
                    println!("{}", line(&m));
                    println!("  options: {}", m.options);
                    println!("  columns: {}", m.columns.join(", "));
                    println!("  training score deciles: {:?}", m.score_edges);
                }
            }),
        ModelsCommand::Rm {
            name,
            version,
            place,
        } => Registry::beside(&place.dir)
            .remove(&name, version)
            .map(|n| eprintln!("removed {n} version(s) of {name}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", e.user_message());
            e.exit_code()
        }
    }
}
