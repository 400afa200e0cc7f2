//! Keeps chunks' Parquet row selections in a plan sent to Ballista.
//!
//! A chunk smaller than its row group is a file scan whose file carries a [`ParquetRowSelection`]
//! (see `chunks`). DataFusion's plan serialisation drops such per-file extensions, so an executor
//! would read the whole row group for every slice. Before a plan goes to a cluster,
//! [`keep_row_selections`] wraps each scan with selections in a [`SlicedScanExec`]: a node of ours
//! that the codec encodes with the selections and that puts them back on the scan it wraps after
//! decoding. A child replaced in process (Ballista's scheduler regroups a fit's files) keeps the
//! selections on its files, and the node takes them from there.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The selection of one file of a scan, as (skip, rows) runs; `None` = the whole file.
type Selectors = Option<Vec<(bool, u64)>>;

/// A Parquet scan whose files read row selections, kept through serialisation.
#[derive(Debug)]
pub struct SlicedScanExec {
    /// The scan, with the selections attached.
    scan: Arc<dyn ExecutionPlan>,
    /// Per file group, per file.
    selections: Vec<Vec<Selectors>>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    selections: Vec<Vec<Selectors>>,
}

fn file_scan(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .as_ref()
        .downcast_ref::<FileScanConfig>()
}

/// The selections of every file of `config`, when any file has one.
fn selections_of(config: &FileScanConfig) -> Option<Vec<Vec<Selectors>>> {
    let all: Vec<Vec<Selectors>> = config
        .file_groups
        .iter()
        .map(|g| {
            g.files()
                .iter()
                .map(|f| {
                    f.extension::<ParquetRowSelection>().map(|s| {
                        s.selection()
                            .iter()
                            .map(|r| (r.skip, r.row_count as u64))
                            .collect()
                    })
                })
                .collect()
        })
        .collect();
    all.iter().flatten().any(Option::is_some).then_some(all)
}

/// `plan` with every scan whose files read row selections wrapped in a [`SlicedScanExec`].
pub fn keep_row_selections(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            if node.as_ref().is::<SlicedScanExec>() {
                return Ok(Transformed::no(node));
            }
            let Some(selections) = file_scan(node.as_ref()).and_then(selections_of) else {
                return Ok(Transformed::no(node));
            };
            Ok(Transformed::yes(Arc::new(SlicedScanExec {
                scan: node,
                selections,
            }) as Arc<dyn ExecutionPlan>))
        })?
        .data)
}

impl SlicedScanExec {
    /// Wraps `scan` (a decoded file scan, without selections), attaching `selections` file by file.
    fn attach(
        scan: Arc<dyn ExecutionPlan>,
        selections: Vec<Vec<Selectors>>,
    ) -> DfResult<SlicedScanExec> {
        let bad = |what: String| {
            DataFusionError::Internal(format!("SlicedScanExec over {}: {what}", scan.name()))
        };
        let config = file_scan(scan.as_ref()).ok_or_else(|| bad("not a file scan".into()))?;
        // A scan that has its selections (an optimizer on the scheduler regrouped the files of
        // one we decoded) keeps them, wherever its files now are.
        if config.file_groups.len() != selections.len() {
            return Err(bad(format!(
                "{} file groups, {} selections",
                config.file_groups.len(),
                selections.len()
            )));
        }
        let groups = config
            .file_groups
            .iter()
            .zip(&selections)
            .map(|(g, sel)| {
                if g.files().len() != sel.len() {
                    return Err(bad(format!(
                        "a group of {} files has {} selections",
                        g.files().len(),
                        sel.len()
                    )));
                }
                let files =
                    g.files()
                        .iter()
                        .zip(sel)
                        .map(|(f, s)| match s {
                            Some(runs) => f.clone().with_extension(ParquetRowSelection::new(
                                RowSelection::from(
                                    runs.iter()
                                        .map(|&(skip, rows)| RowSelector {
                                            row_count: rows as usize,
                                            skip,
                                        })
                                        .collect::<Vec<_>>(),
                                ),
                            )),
                            None => f.clone(),
                        })
                        .collect();
                Ok(FileGroup::new(files))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let rebuilt = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build();
        Ok(SlicedScanExec {
            scan: DataSourceExec::from_data_source(rebuilt),
            selections,
        })
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> DfResult<()> {
        let payload = Payload {
            selections: self.selections.clone(),
        };
        let bytes = postcard::to_stdvec(&payload)
            .map_err(|e| DataFusionError::Internal(format!("encoding SlicedScanExec: {e}")))?;
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    pub(crate) fn decode(buf: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Self> {
        let payload: Payload = postcard::from_bytes(buf)
            .map_err(|e| DataFusionError::Internal(format!("decoding SlicedScanExec: {e}")))?;
        let [scan] = inputs else {
            return Err(DataFusionError::Internal(format!(
                "SlicedScanExec takes one child, got {}",
                inputs.len()
            )));
        };
        Self::attach(scan.clone(), payload.selections)
    }
}

impl DisplayAs for SlicedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let sliced = self.selections.iter().flatten().flatten().count();
        write!(f, "SlicedScanExec: files_with_row_selections={sliced}")
    }
}

impl ExecutionPlan for SlicedScanExec {
    fn name(&self) -> &'static str {
        "SlicedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// A child replaced in process (Ballista's scheduler regroups a fit's files, and narrows a
    /// task's scan to its own file groups) carries the selections on its files: the node takes
    /// them from there, wherever the files now are.
    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let scan = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("SlicedScanExec takes one child".to_string())
        })?;
        let config = file_scan(scan.as_ref()).ok_or_else(|| {
            DataFusionError::Internal(format!("SlicedScanExec over {}", scan.name()))
        })?;
        let selections = selections_of(config).unwrap_or_else(|| {
            config
                .file_groups
                .iter()
                .map(|g| vec![None; g.files().len()])
                .collect()
        });
        Ok(Arc::new(SlicedScanExec { scan, selections }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }
}
