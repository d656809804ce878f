//! Report content per subscriber, as data: which rows and columns of a tabular report a
//! subscription wants and in which format ([`ContentSpec`]), and the condition of a TRIGGERED
//! subscription ([`Trigger`]). No file is read here: the host produces the personalised file
//! (`src/content/` in the service) and computes the report's [`ContentFacts`] at ingest, so that
//! a trigger over content is decided in the dataflow, before any delivery task exists.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::report::{ReportDataType, ReportDistribution};
use crate::validation::FieldError;

/// A JSON number that can live in a differential collection (total order, hashable): compared with
/// `f64::total_cmp`, so `NaN` (never produced by JSON) is ordered rather than poisonous.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = f64))]
pub struct Number(pub f64);

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Number {}
impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}
impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        f64::deserialize(deserializer).map(Number)
    }
}

/// A value a row predicate compares a cell with: a string, a number or a boolean.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Number(Number),
    Text(String),
}

/// How a row predicate or a content condition compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Test<'a, T> {
    In(&'a [T]),
    NotIn(&'a [T]),
    Eq(&'a T),
    Ne(&'a T),
    Gt(&'a T),
    Gte(&'a T),
    Lt(&'a T),
    Lte(&'a T),
}

/// One row predicate: `{"column": "region", "in": ["EMEA", "APAC"]}`, or exactly one of `not_in`,
/// `eq`, `ne`, `gt`, `gte`, `lt`, `lte` with a single value.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RowPredicate {
    pub column: String,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub is_in: Option<Vec<Scalar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<Scalar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<Scalar>,
}

impl RowPredicate {
    /// The one comparison this predicate makes (validation guarantees there is exactly one).
    pub fn test(&self) -> Option<Test<'_, Scalar>> {
        let mut tests = self.tests();
        let first = tests.pop();
        if tests.is_empty() { first } else { None }
    }

    fn tests(&self) -> Vec<Test<'_, Scalar>> {
        let mut out = Vec::new();
        if let Some(v) = &self.is_in {
            out.push(Test::In(v));
        }
        if let Some(v) = &self.not_in {
            out.push(Test::NotIn(v));
        }
        out.extend(self.eq.as_ref().map(Test::Eq));
        out.extend(self.ne.as_ref().map(Test::Ne));
        out.extend(self.gt.as_ref().map(Test::Gt));
        out.extend(self.gte.as_ref().map(Test::Gte));
        out.extend(self.lt.as_ref().map(Test::Lt));
        out.extend(self.lte.as_ref().map(Test::Lte));
        out
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        column_name(&format!("{field}.column"), &self.column)?;
        let tests = self.tests();
        if tests.len() != 1 {
            return Err(FieldError::new(
                field,
                "needs exactly one of in, not_in, eq, ne, gt, gte, lt, lte",
            ));
        }
        match tests[0] {
            Test::In(values) | Test::NotIn(values) if values.is_empty() || values.len() > MAX_VALUES => {
                Err(FieldError::new(field, format!("needs 1 to {MAX_VALUES} values")))
            }
            Test::Gt(Scalar::Bool(_)) | Test::Gte(Scalar::Bool(_)) | Test::Lt(Scalar::Bool(_)) | Test::Lte(Scalar::Bool(_)) => {
                Err(FieldError::new(field, "orders numbers and strings, not booleans"))
            }
            _ => Ok(()),
        }
    }
}

/// The largest `in` / `not_in` list: predicates become one comparison per value.
pub const MAX_VALUES: usize = 1000;

/// Output formats for tabular content; `format_preferences` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutputFormat {
    Csv,
    /// JSON lines: one object per row.
    Json,
    Parquet,
    Xlsx,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "jsonl",
            OutputFormat::Parquet => "parquet",
            OutputFormat::Xlsx => "xlsx",
        }
    }
}

/// What `format_preferences` may name: the tabular formats, and the pass-through ones that mean "the
/// report's file as published" (`PDF`, `HTML`, `ORIGINAL`). Case-insensitive.
pub fn parse_format(value: &str) -> Result<Option<OutputFormat>, ()> {
    match value.to_ascii_uppercase().as_str() {
        "CSV" => Ok(Some(OutputFormat::Csv)),
        "JSON" | "JSONL" | "NDJSON" => Ok(Some(OutputFormat::Json)),
        "PARQUET" => Ok(Some(OutputFormat::Parquet)),
        "XLSX" => Ok(Some(OutputFormat::Xlsx)),
        "PDF" | "HTML" | "ORIGINAL" => Ok(None),
        _ => Err(()),
    }
}

/// Everything the host needs to personalise a tabular report for one subscription: carried by each
/// delivery task, and hashed (with the report) into the cache key of the personalised file, so
/// identical subscriptions share one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentSpec {
    /// Rows whose `portfolio_column` is one of these (when the file has that column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub portfolio_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<RowPredicate>,
    /// The columns kept, in this order; empty keeps all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// `None`: the source's own format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
}

/// The column `portfolio_ids` selects rows by.
pub const PORTFOLIO_COLUMN: &str = "portfolio_id";

impl ContentSpec {
    /// A stable hex digest of the spec (FNV-1a over its JSON), the personalised file's cache key.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{:016x}", crate::dataflow::route_hash(&json))
    }
}

/// An aggregate a content condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Max,
    Min,
    Sum,
    Mean,
    /// Non-null cells of the column (`"column": "*"` counts rows).
    Count,
}

impl Aggregate {
    pub const ALL: [Aggregate; 5] = [Aggregate::Max, Aggregate::Min, Aggregate::Sum, Aggregate::Mean, Aggregate::Count];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Sum => "sum",
            Aggregate::Mean => "mean",
            Aggregate::Count => "count",
        }
    }
}

/// The key of one fact in [`ContentFacts`], e.g. `max(exposure)`, `count(*)`.
pub fn fact_key(aggregate: Aggregate, column: &str) -> String {
    format!("{}({column})", aggregate.as_str())
}

/// Aggregates of a tabular report's numeric columns (and `count(*)`), computed by the host when
/// the report is accepted and stored with it: what content conditions are decided on.
pub type ContentFacts = BTreeMap<String, Number>;

/// A condition over content: `{"column": "exposure", "aggregate": "max", "gt": 1000000}`, with
/// exactly one of `gt`, `gte`, `lt`, `lte`, `eq`, `ne`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContentCondition {
    pub column: String,
    pub aggregate: Aggregate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<Number>,
}

impl ContentCondition {
    fn comparisons(&self) -> Vec<(fn(f64, f64) -> bool, f64)> {
        let ops: [(Option<Number>, fn(f64, f64) -> bool); 6] = [
            (self.gt, |a, b| a > b),
            (self.gte, |a, b| a >= b),
            (self.lt, |a, b| a < b),
            (self.lte, |a, b| a <= b),
            (self.eq, |a, b| a == b),
            (self.ne, |a, b| a != b),
        ];
        ops.into_iter().filter_map(|(value, op)| value.map(|v| (op, v.0))).collect()
    }

    /// Whether `facts` satisfy the condition. A fact the report does not have (no such numeric
    /// column, no tabular content, an unreadable file) never satisfies it.
    pub fn holds(&self, facts: &ContentFacts) -> bool {
        let Some(value) = facts.get(&fact_key(self.aggregate, &self.column)) else { return false };
        self.comparisons().iter().all(|(op, bound)| op(value.0, *bound))
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.column != "*" || self.aggregate != Aggregate::Count {
            column_name(&format!("{field}.column"), &self.column)?;
        }
        if self.column == "*" && self.aggregate != Aggregate::Count {
            return Err(FieldError::new(format!("{field}.column"), "\"*\" is only counted (aggregate count)"));
        }
        match self.comparisons().as_slice() {
            [(_, bound)] if bound.is_finite() => Ok(()),
            [_] => Err(FieldError::new(field, "the bound must be a finite number")),
            _ => Err(FieldError::new(field, "needs exactly one of gt, gte, lt, lte, eq, ne")),
        }
    }
}

/// A TRIGGERED subscription's condition: every part given must hold (an empty part holds).
/// `data_types`: the report's `data_type` is one of these; `min_priority`: `routing.priority` is at
/// least this; `content`: each condition holds over the report's [`ContentFacts`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The report's `data_type` is one of these, e.g. `["ALERT_REPORT"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_types: Vec<ReportDataType>,
    /// The report's `routing.priority` is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<i32>,
    /// Conditions over the report's tabular content, e.g.
    /// `{"column": "var_99", "aggregate": "max", "gt": 5}`; decided on `report_data.content_facts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentCondition>,
}

/// The most content conditions one trigger may have.
pub const MAX_CONDITIONS: usize = 32;

impl Trigger {
    /// Whether `report` fires this trigger: decided on the report alone (its metadata and the
    /// content facts computed at ingest), so the dataflow creates no delivery when it does not.
    pub fn fires(&self, report: &ReportDistribution) -> bool {
        if !self.data_types.is_empty() && !self.data_types.contains(&report.data_type) {
            return false;
        }
        if self.min_priority.is_some_and(|min| report.routing.priority < min) {
            return false;
        }
        self.content.iter().all(|condition| condition.holds(&report.report_data.content_facts))
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.data_types.is_empty() && self.min_priority.is_none() && self.content.is_empty() {
            return Err(FieldError::new(field, "needs at least one of data_types, min_priority, content"));
        }
        if self.content.len() > MAX_CONDITIONS {
            return Err(FieldError::new(format!("{field}.content"), format!("at most {MAX_CONDITIONS} conditions")));
        }
        for (i, condition) in self.content.iter().enumerate() {
            condition.validate(&format!("{field}.content[{i}]"))?;
        }
        Ok(())
    }
}

/// Validates the content part of a subscription's filters and its format preferences.
pub fn validate_selection(rows: &[RowPredicate], columns: &[String], formats: &[String]) -> Result<(), FieldError> {
    if rows.len() > MAX_CONDITIONS {
        return Err(FieldError::new("filters.rows", format!("at most {MAX_CONDITIONS} predicates")));
    }
    for (i, predicate) in rows.iter().enumerate() {
        predicate.validate(&format!("filters.rows[{i}]"))?;
    }
    for (i, column) in columns.iter().enumerate() {
        column_name(&format!("filters.columns[{i}]"), column)?;
        if columns[..i].contains(column) {
            return Err(FieldError::new(format!("filters.columns[{i}]"), "names a column twice"));
        }
    }
    for (i, format) in formats.iter().enumerate() {
        parse_format(format).map_err(|()| {
            FieldError::new(
                format!("delivery_preferences.format_preferences[{i}]"),
                "must be one of CSV, JSON, PARQUET, XLSX (tabular reports) or PDF, HTML, ORIGINAL (the file as published)",
            )
        })?;
    }
    Ok(())
}

fn column_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must be a column name of 1 to 255 bytes without control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(json: serde_json::Value) -> ContentCondition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn predicates_parse_and_need_exactly_one_test() {
        let p: RowPredicate = serde_json::from_value(serde_json::json!({"column": "region", "in": ["EMEA", 3, true]})).unwrap();
        assert_eq!(
            p.test(),
            Some(Test::In(&[Scalar::Text("EMEA".into()), Scalar::Number(Number(3.0)), Scalar::Bool(true)][..]))
        );
        assert!(p.validate("f").is_ok());
        let two: RowPredicate = serde_json::from_value(serde_json::json!({"column": "x", "gt": 1, "lt": 5})).unwrap();
        assert_eq!(two.validate("filters.rows[0]").unwrap_err().field, "filters.rows[0]");
        let none: RowPredicate = serde_json::from_value(serde_json::json!({"column": "x"})).unwrap();
        assert!(none.validate("f").is_err());
        let empty: RowPredicate = serde_json::from_value(serde_json::json!({"column": "x", "in": []})).unwrap();
        assert!(empty.validate("f").is_err());
        let bool_order: RowPredicate = serde_json::from_value(serde_json::json!({"column": "x", "gt": true})).unwrap();
        assert!(bool_order.validate("f").is_err());
        assert!(serde_json::from_value::<RowPredicate>(serde_json::json!({"column": "x", "like": "a%"})).is_err());
    }

    #[test]
    fn formats_are_validated_and_named() {
        assert!(validate_selection(&[], &[], &["csv".into(), "PDF".into(), "Xlsx".into()]).is_ok());
        let error = validate_selection(&[], &[], &["PDF".into(), "DOCX".into()]).unwrap_err();
        assert_eq!(error.field, "delivery_preferences.format_preferences[1]");
        let error = validate_selection(&[], &["a".into(), "a".into()], &[]).unwrap_err();
        assert_eq!(error.field, "filters.columns[1]");
    }

    #[test]
    fn content_conditions_compare_facts() {
        let facts: ContentFacts = [("max(exposure)".to_string(), Number(150.0)), ("count(*)".to_string(), Number(3.0))].into();
        assert!(condition(serde_json::json!({"column": "exposure", "aggregate": "max", "gt": 100})).holds(&facts));
        assert!(!condition(serde_json::json!({"column": "exposure", "aggregate": "max", "gt": 150})).holds(&facts));
        assert!(condition(serde_json::json!({"column": "exposure", "aggregate": "max", "gte": 150})).holds(&facts));
        assert!(condition(serde_json::json!({"column": "*", "aggregate": "count", "lt": 4})).holds(&facts));
        assert!(!condition(serde_json::json!({"column": "other", "aggregate": "max", "lt": 1e9})).holds(&facts), "missing fact");
        let bad = condition(serde_json::json!({"column": "*", "aggregate": "max", "gt": 1}));
        assert_eq!(bad.validate("t.content[0]").unwrap_err().field, "t.content[0].column");
        let two = condition(serde_json::json!({"column": "a", "aggregate": "sum", "gt": 1, "lt": 2}));
        assert_eq!(two.validate("t.content[0]").unwrap_err().field, "t.content[0]");
    }

    #[test]
    fn spec_digest_is_stable_and_distinguishes_specs() {
        let a = ContentSpec { columns: vec!["a".into()], format: Some(OutputFormat::Csv), ..Default::default() };
        let b = ContentSpec { columns: vec!["a".into()], format: Some(OutputFormat::Parquet), ..Default::default() };
        assert_eq!(a.digest(), a.clone().digest());
        assert_ne!(a.digest(), b.digest());
    }
}
