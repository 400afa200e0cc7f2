//! Models by name: `anomaly_score('fraud', amount, latency_ms)` scores with the model registered
//! as `fraud` (`CREATE MODEL`, or a pipeline's `[detect] model`), `'fraud@2'` with its version 2.
//!
//! The analyzer rule [`ResolveModelNames`] replaces a string-literal model argument of the model
//! functions by the model's bytes, read through the session's [`ModelCatalog`] (a config
//! extension the caller sets: `nomaly sql` sets one over its `--models` directory). It runs where
//! the plan is analysed first — in the client, before a plan is sent to a Ballista scheduler — so
//! what travels is the model itself, and no executor reads the catalog. A session without a
//! catalog refuses a name at planning, saying where names work.

use datafusion::common::config::{ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;
use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

/// The functions whose first argument is a model.
pub const MODEL_FUNCTIONS: [&str; 5] = [
    "anomaly_score",
    "is_anomaly",
    "anomaly_detect",
    "anomaly_explain",
    "anomaly_model_info",
];

/// Where names find their models.
pub trait ModelResolver: Debug + Send + Sync {
    /// The serialised model named `name` at `version` (the latest without one), or why not.
    fn model_bytes(&self, name: &str, version: Option<u32>)
    -> std::result::Result<Vec<u8>, String>;
}

/// The session's model catalog (a config extension holding the resolver; it has no string
/// options, so it never travels to a scheduler, which gets the resolved plan instead).
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    pub resolver: Option<Arc<dyn ModelResolver>>,
}

impl ConfigExtension for ModelCatalog {
    const PREFIX: &'static str = "nomaly_models";
}

impl ExtensionOptions for ModelCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }
    fn set(&mut self, key: &str, _value: &str) -> Result<()> {
        plan_err!("nomaly_models.{key}: the model catalog has no settings")
    }
    fn entries(&self) -> Vec<datafusion::common::config::ConfigEntry> {
        Vec::new()
    }
}

/// `name` or `name@version`.
pub fn parse_model_ref(text: &str) -> std::result::Result<(&str, Option<u32>), String> {
    match text.split_once('@') {
        None => Ok((text, None)),
        Some((name, v)) => v
            .parse::<u32>()
            .map(|v| (name, Some(v)))
            .map_err(|_| format!("'{text}': a model is named NAME or NAME@VERSION (a number)")),
    }
}

/// Replaces model names with the models they name.
#[derive(Debug, Default)]
pub struct ResolveModelNames;

impl AnalyzerRule for ResolveModelNames {
    fn name(&self) -> &str {
        "nomaly_model_names"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let resolver = config
            .extensions
            .get::<ModelCatalog>()
            .and_then(|c| c.resolver.clone());
        plan.transform_up_with_subqueries(|node| {
            // A resolved call keeps the name it was planned with (`anomaly_score(Utf8("fraud"),
            // ...)`): the plan's schema must not change under the rule.
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let name = names.save(&e);
                e.transform_up(|e| resolve(e, resolver.as_deref()))
                    .map(|t| t.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}

fn resolve(e: Expr, resolver: Option<&dyn ModelResolver>) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(mut f) = e else {
        return Ok(Transformed::no(e));
    };
    let function = f.func.name().to_string();
    if !MODEL_FUNCTIONS.contains(&function.as_str()) {
        return Ok(Transformed::no(Expr::ScalarFunction(f)));
    }
    let name = match f.args.first() {
        Some(Expr::Literal(v, _)) => match v.try_as_str() {
            Some(Some(name)) => name.to_string(),
            _ => return Ok(Transformed::no(Expr::ScalarFunction(f))),
        },
        _ => return Ok(Transformed::no(Expr::ScalarFunction(f))),
    };
    let Some(resolver) = resolver else {
        return plan_err!(
            "{function}: a model name ('{name}') needs a model catalog, which `nomaly sql` opens \
             (its --models directory, where CREATE MODEL and pipelines register models); here pass \
             a model, the BINARY result of fit_detector(...)"
        );
    };
    let (model, version) = parse_model_ref(&name).or_else(|e| plan_err!("{function}: {e}"))?;
    let bytes = match resolver.model_bytes(model, version) {
        Ok(bytes) => bytes,
        Err(e) => return plan_err!("{function}: {e}"),
    };
    f.args[0] = Expr::Literal(ScalarValue::Binary(Some(bytes)), None);
    Ok(Transformed::yes(Expr::ScalarFunction(f)))
}
