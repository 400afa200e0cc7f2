//! `[detect] model`, `train`, `version`, `drift_above`: where a run's model comes from.

use super::{check_query, place};
use crate::error::{PipelineError, Result};
use crate::spec::{DetectSpec, PipelineFile};

/// The default drift threshold (population-stability index): above 0.2 a shift is usually
/// worth a look.
pub const DEFAULT_DRIFT_ABOVE: f64 = 0.2;

/// Where a run's model comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ModelSource {
    /// Fitted on the detect input (no `model`, no `train`).
    #[default]
    Input,
    /// Fitted on the `train` query; registered under `register` when the run succeeds.
    Train {
        sql: String,
        register: Option<String>,
    },
    /// Read from the registry: `name`, at `version` (default the latest).
    Registered { name: String, version: Option<u32> },
}

pub(super) fn compile_model(file: &PipelineFile, d: &DetectSpec) -> Result<ModelSource> {
    let at = |key: &str| place(file, "[detect]", 0, Some(key));
    if let Some(name) = &d.model {
        crate::models::check_name(name).map_err(|e| PipelineError::invalid(at("model"), e))?;
    }
    match (&d.model, &d.train, d.version) {
        (_, Some(_), Some(_)) | (None, None, Some(_)) => Err(PipelineError::invalid(
            at("version"),
            "version picks a registered model to score with: give it with model = \"NAME\" and \
             no train",
        )),
        (register, Some(sql), None) => {
            check_query(sql, &at("train"), "[detect] train")?;
            Ok(ModelSource::Train {
                sql: sql.clone(),
                register: register.clone(),
            })
        }
        (Some(name), None, version) => Ok(ModelSource::Registered {
            name: name.clone(),
            version,
        }),
        (None, None, None) => Ok(ModelSource::Input),
    }
}

pub(super) fn drift_threshold(file: &PipelineFile, d: &DetectSpec) -> Result<f64> {
    match d.drift_above {
        None => Ok(DEFAULT_DRIFT_ABOVE),
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        Some(x) => Err(PipelineError::invalid(
            place(file, "[detect]", 0, Some("drift_above")),
            format!("drift_above = {x}: a population-stability index above 0, e.g. 0.2"),
        )),
    }
}
