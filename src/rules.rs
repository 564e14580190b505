//! User rules: detectors written in SQL, run by DataFusion over each closed window's tables.
//!
//! A rule (`[[rules]]` in the config) is one `SELECT` over the window tables `pairs`, `nodes`
//! and `breakdown` (columns in [`detect::tables`]: golden signals plus each signal's
//! `_baseline`, `_sigma`, `_z` and `_p`, its tail probability). Each row it returns is a raw finding with signature `rule`,
//! the rule's name in `rule` and its severity; it then opens and resolves like any finding
//! (with every raw finding a finding: `open-after = of-windows = 1`).
//!
//! The columns a rule returns say what the finding is; any other column is a config error:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `node` | string | subject: one service, or |
//! | `source`, `destination` | string | subject: one pair (with `source_zone`, `destination_zone`: a zone pair), or |
//! | `service`, `version` | string | subject: one version of a service |
//! | `value`, `baseline` | number | evidence: the value seen and what it is compared with (both or neither) |
//! | `signal`, `unit` | string | the evidence's signal (default: the rule's name) and unit (default empty) |
//! | `score` | number | the finding's score in [0, 1] (default 0) |
//! | `severity` | string | `warning` or `critical`, overriding the rule's |
//! | `summary` | string | the finding's one line (default: rule and subject) |
//!
//! Rules are parsed, checked against the tables' schemas and planned when graywatch starts: a
//! bad rule is a config error that names it, never a crash at the first window. Each window,
//! every rule's plan runs over the new tables on a current-thread runtime owned by
//! [`Rules`] (detection stays synchronous: no thread, no clock, no I/O). A rule that fails at
//! run time (a cast of a bad value) gives no finding for that window and is counted.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{MemTable, TableType};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use detect::signatures::{WindowView, counted, finding};
use schemas::{Confidence, Finding, Severity, Signature, Subject};
use serde::Deserialize;

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// The rule's name: in findings (`rule`), ids and incidents; letters, digits, `-`, `_`
    /// and `.`, unique among the rules.
    pub name: String,
    /// The findings' severity unless a row's `severity` column says otherwise. Default
    /// `warning`.
    #[serde(default = "warning")]
    pub severity: Severity,
    /// One `SELECT` over `pairs`, `nodes` and `breakdown` (see the [module docs](self)).
    pub sql: String,
}

fn warning() -> Severity {
    Severity::Warning
}

/// A rule that can't run: names the rule and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The rule's name is empty, has other characters than letters, digits, `-`, `_`, `.`,
    /// or is used twice.
    #[error("rule {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// DataFusion refused the SQL (parse, unknown table or column, type, not a query).
    #[error("rule {rule:?}: {source}")]
    Plan {
        /// The rule.
        rule: String,
        /// DataFusion's error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The query's columns don't say what a finding is (see the [module docs](self)).
    #[error("rule {rule:?}: {reason}")]
    Columns {
        /// The rule.
        rule: String,
        /// What is missing, unknown or of the wrong type.
        reason: String,
    },
    /// The rule failed on one window's tables.
    #[error("rule {rule:?}, window at {window_start_us} µs: {reason}")]
    Run {
        /// The rule.
        rule: String,
        /// The window's start, µs since the epoch.
        window_start_us: i64,
        /// DataFusion's error, or a row that does not make a finding.
        reason: String,
    },
}

/// A table whose rows are replaced every window: a rule's plan is made once and reads
/// whatever the table holds when it runs.
#[derive(Debug)]
struct WindowTable {
    schema: SchemaRef,
    batch: RwLock<Option<RecordBatch>>,
}

impl WindowTable {
    fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(WindowTable {
            schema,
            batch: RwLock::new(None),
        })
    }

    fn set(&self, batch: RecordBatch) {
        *self.batch.write().unwrap_or_else(|e| e.into_inner()) = Some(batch);
    }
}

#[async_trait::async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch = self.batch.read().unwrap_or_else(|e| e.into_inner()).clone();
        let partition = batch.into_iter().collect();
        MemTable::try_new(self.schema.clone(), vec![partition])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The tables a rule reads.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    pairs: bool,
    nodes: bool,
    breakdown: bool,
}

/// Where a row's columns are in the rule's output.
#[derive(Debug, Clone, Default)]
struct Shape {
    node: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
    source_zone: Option<usize>,
    destination_zone: Option<usize>,
    service: Option<usize>,
    version: Option<usize>,
    value: Option<usize>,
    baseline: Option<usize>,
    signal: Option<usize>,
    unit: Option<usize>,
    score: Option<usize>,
    severity: Option<usize>,
    summary: Option<usize>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    severity: Severity,
    plan: LogicalPlan,
    shape: Shape,
    reads: Reads,
}

/// The user rules, planned (see the [module docs](self)).
pub struct Rules {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    pairs: Arc<WindowTable>,
    nodes: Arc<WindowTable>,
    breakdown: Arc<WindowTable>,
    rules: Vec<Rule>,
    /// The tables any rule reads (the others are not built).
    reads: Reads,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// Parses, checks and plans `rules`.
    ///
    /// # Errors
    /// The first rule that can't run, named ([`RuleError`]).
    pub fn new(rules: &[RuleConfig]) -> Result<Self, RuleError> {
        // one partition, one thread: a window's tables are small, and detection must not
        // take the cores parsing needs
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let pairs = WindowTable::new(detect::tables::pair_schema());
        let nodes = WindowTable::new(detect::tables::node_schema());
        let breakdown = WindowTable::new(detect::tables::breakdown_schema());
        for (name, table) in [
            ("pairs", &pairs),
            ("nodes", &nodes),
            ("breakdown", &breakdown),
        ] {
            ctx.register_table(name, table.clone() as Arc<dyn TableProvider>)
                .expect("a new context has no such table");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime needs no resources");
        let mut names = BTreeSet::new();
        let mut planned = Vec::with_capacity(rules.len());
        for r in rules {
            check_name(&r.name)?;
            if !names.insert(r.name.as_str()) {
                return Err(RuleError::Name {
                    name: r.name.clone(),
                    reason: "two rules have this name",
                });
            }
            let plan_error = |e| RuleError::Plan {
                rule: r.name.clone(),
                source: Box::new(e),
            };
            let plan = runtime
                .block_on(ctx.state().create_logical_plan(&r.sql))
                .map_err(plan_error)?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(plan_error)?;
            let plan = ctx.state().optimize(&plan).map_err(plan_error)?;
            let shape = shape(&plan).map_err(|reason| RuleError::Columns {
                rule: r.name.clone(),
                reason,
            })?;
            let reads = reads(&plan);
            planned.push(Rule {
                name: r.name.clone(),
                severity: r.severity,
                plan,
                shape,
                reads,
            });
        }
        Ok(Rules {
            ctx,
            runtime,
            pairs,
            nodes,
            breakdown,
            reads: planned.iter().fold(Reads::default(), |a, r| Reads {
                pairs: a.pairs || r.reads.pairs,
                nodes: a.nodes || r.reads.nodes,
                breakdown: a.breakdown || r.reads.breakdown,
            }),
            rules: planned,
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs every rule over one closed window, pushing its raw findings to `out` (rule order,
    /// then row order). Returns the rules that failed on this window.
    pub fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) -> Vec<RuleError> {
        let reads = self.reads;
        if reads.pairs {
            self.pairs
                .set(detect::tables::pair_table(view.pairs, view.baselines));
        }
        if reads.nodes {
            self.nodes
                .set(detect::tables::node_table(view.nodes, view.baselines));
        }
        if reads.breakdown {
            self.breakdown
                .set(detect::tables::breakdown_table(view.pairs));
        }
        let mut errors = Vec::new();
        for rule in &self.rules {
            let run = |reason: String| RuleError::Run {
                rule: rule.name.clone(),
                window_start_us: view.window.start_us,
                reason,
            };
            let batches = self.runtime.block_on(async {
                let plan = self.ctx.state().create_physical_plan(&rule.plan).await?;
                datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await
            });
            let batches = match batches {
                Ok(b) => b,
                Err(e) => {
                    errors.push(run(e.to_string()));
                    continue;
                }
            };
            for b in &batches {
                if let Err(reason) = rows(rule, view, b, out) {
                    errors.push(run(reason));
                }
            }
        }
        errors
    }
}

fn check_name(name: &str) -> Result<(), RuleError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuleError::Name {
            name: name.to_owned(),
            reason: "a rule's name is 1 to 128 letters, digits, '-', '_' or '.'",
        })
    }
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Null)
}

/// Where the columns of a finding are in the plan's output, or what is wrong with them.
fn shape(plan: &LogicalPlan) -> Result<Shape, String> {
    let mut s = Shape::default();
    for (i, field) in plan.schema().fields().iter().enumerate() {
        let t = field.data_type();
        let (slot, string) = match field.name().as_str() {
            "node" => (&mut s.node, true),
            "source" => (&mut s.source, true),
            "destination" => (&mut s.destination, true),
            "source_zone" => (&mut s.source_zone, true),
            "destination_zone" => (&mut s.destination_zone, true),
            "service" => (&mut s.service, true),
            "version" => (&mut s.version, true),
            "signal" => (&mut s.signal, true),
            "unit" => (&mut s.unit, true),
            "severity" => (&mut s.severity, true),
            "summary" => (&mut s.summary, true),
            "value" => (&mut s.value, false),
            "baseline" => (&mut s.baseline, false),
            "score" => (&mut s.score, false),
            other => {
                return Err(format!(
                    "returns column {other:?}; a rule returns node | source, destination \
                     [, source_zone, destination_zone] | service, version, and optionally \
                     value, baseline, signal, unit, score, severity, summary (rename with AS)"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("returns column {:?} twice", field.name()));
        }
        let fits = if string { is_string(t) } else { is_number(t) };
        if !fits {
            let want = if string { "a string" } else { "a number" };
            return Err(format!(
                "column {:?} is {t}, it must be {want}",
                field.name()
            ));
        }
        *slot = Some(i);
    }
    let subjects = [
        s.node.is_some(),
        s.source.is_some() && s.destination.is_some(),
        s.service.is_some() && s.version.is_some(),
    ];
    match subjects.iter().filter(|&&x| x).count() {
        1 => {}
        0 => {
            return Err(
                "returns no subject: node, source and destination, or service and \
                        version"
                    .into(),
            );
        }
        _ => return Err("returns more than one subject (node, pair, version)".into()),
    }
    let half_pair = s.source.is_some() != s.destination.is_some();
    let half_version = s.service.is_some() != s.version.is_some();
    let half_zones = s.source_zone.is_some() != s.destination_zone.is_some();
    if half_pair || half_version || half_zones {
        return Err(
            "source goes with destination, service with version, source_zone with \
                    destination_zone"
                .into(),
        );
    }
    if s.source_zone.is_some() && s.source.is_none() {
        return Err("zones go with source and destination".into());
    }
    if s.value.is_some() != s.baseline.is_some() {
        return Err(
            "value and baseline go together (what was seen, what it is compared with: \
                    the baseline or the threshold)"
                .into(),
        );
    }
    Ok(s)
}

/// The window tables `plan` scans.
fn reads(plan: &LogicalPlan) -> Reads {
    let mut r = Reads::default();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match scan.table_name.table() {
                "pairs" => r.pairs = true,
                "nodes" => r.nodes = true,
                "breakdown" => r.breakdown = true,
                _ => {}
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    r
}

/// A column as strings (any string type), or as f64 (any number type).
enum Column {
    Strings(arrow::array::StringArray),
    Numbers(arrow::array::Float64Array),
}

impl Column {
    fn of(batch: &RecordBatch, i: usize, string: bool) -> Result<Column, String> {
        let to = if string {
            DataType::Utf8
        } else {
            DataType::Float64
        };
        let array = arrow::compute::cast(batch.column(i), &to).map_err(|e| e.to_string())?;
        Ok(if string {
            Column::Strings(array.as_string::<i32>().clone())
        } else {
            Column::Numbers(array.as_primitive::<Float64Type>().clone())
        })
    }

    fn str(&self, row: usize) -> Option<&str> {
        match self {
            Column::Strings(a) => a.is_valid(row).then(|| a.value(row)),
            Column::Numbers(_) => None,
        }
    }

    fn num(&self, row: usize) -> Option<f64> {
        match self {
            Column::Numbers(a) => a.is_valid(row).then(|| a.value(row)),
            Column::Strings(_) => None,
        }
    }
}

/// The findings of one batch of a rule's output.
fn rows(
    rule: &Rule,
    view: &WindowView<'_>,
    batch: &RecordBatch,
    out: &mut Vec<Finding>,
) -> Result<(), String> {
    let s = &rule.shape;
    let col = |i: Option<usize>, string: bool| -> Result<Option<Column>, String> {
        i.map(|i| Column::of(batch, i, string)).transpose()
    };
    let node = col(s.node, true)?;
    let source = col(s.source, true)?;
    let destination = col(s.destination, true)?;
    let source_zone = col(s.source_zone, true)?;
    let destination_zone = col(s.destination_zone, true)?;
    let service = col(s.service, true)?;
    let version = col(s.version, true)?;
    let signal = col(s.signal, true)?;
    let unit = col(s.unit, true)?;
    let severity = col(s.severity, true)?;
    let summary = col(s.summary, true)?;
    let value = col(s.value, false)?;
    let baseline = col(s.baseline, false)?;
    let score = col(s.score, false)?;
    fn text(c: &Option<Column>, row: usize) -> Option<&str> {
        c.as_ref().and_then(|c| c.str(row))
    }
    let need = |c: &Option<Column>, row: usize, what: &str| -> Result<String, String> {
        text(c, row)
            .map(str::to_owned)
            .ok_or_else(|| format!("row {row}: {what} is null"))
    };
    for row in 0..batch.num_rows() {
        let subject = if node.is_some() {
            Subject::Node {
                node: need(&node, row, "node")?,
            }
        } else if service.is_some() {
            Subject::Version {
                service: need(&service, row, "service")?,
                version: need(&version, row, "version")?,
            }
        } else if source_zone.is_some() {
            Subject::ZonePair {
                source: need(&source, row, "source")?,
                destination: need(&destination, row, "destination")?,
                source_zone: need(&source_zone, row, "source_zone")?,
                destination_zone: need(&destination_zone, row, "destination_zone")?,
            }
        } else {
            Subject::Pair {
                source: need(&source, row, "source")?,
                destination: need(&destination, row, "destination")?,
            }
        };
        let severity = match text(&severity, row) {
            None => rule.severity,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(other) => {
                return Err(format!(
                    "row {row}: severity {other:?} is not \"warning\" or \"critical\""
                ));
            }
        };
        let mut evidence = Vec::new();
        let seen = value.as_ref().and_then(|c| c.num(row));
        let against = baseline.as_ref().and_then(|c| c.num(row));
        if let (Some(v), Some(b)) = (seen, against)
            && v.is_finite()
            && b.is_finite()
        {
            evidence.push(counted(
                text(&signal, row).unwrap_or(&rule.name),
                v,
                b,
                text(&unit, row).unwrap_or(""),
            ));
        }
        let line = match text(&summary, row) {
            Some(s) => s.to_owned(),
            None => format!("rule {}: {}", rule.name, subject.key()),
        };
        let key = subject.key();
        let mut f = finding(
            Signature::Rule,
            subject,
            view.window,
            severity,
            evidence,
            Vec::new(),
            Confidence::Normal,
            line,
        );
        f.id = format!(
            "{}/{}/{key}/{}",
            Signature::Rule.as_str(),
            rule.name,
            view.window.start_us
        );
        if let Some(x) = score.as_ref().and_then(|c| c.num(row))
            && x.is_finite()
        {
            f.score = x.clamp(0.0, 1.0);
        }
        f.rule = Some(rule.name.clone());
        out.push(f);
    }
    Ok(())
}
