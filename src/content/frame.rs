//! The lazy query over a report's file: scan, keep the subscriber's rows and columns; and the one
//! aggregate query that yields a report's content facts.

use std::path::Path;

use dataflows::content::{fact_key, Aggregate, ContentFacts, ContentSpec, Number, OutputFormat, Scalar, Test, PORTFOLIO_COLUMN};
use polars::prelude::*;

use super::ContentError;

/// The formats a report's tabular file may come in, told by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    Csv,
    Parquet,
    JsonLines,
}

impl SourceFormat {
    pub fn of(path: &Path) -> Option<SourceFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(SourceFormat::Csv),
            "parquet" => Some(SourceFormat::Parquet),
            "jsonl" | "ndjson" => Some(SourceFormat::JsonLines),
            _ => None,
        }
    }

    /// The output format when the subscriber names none: the source's own.
    pub fn output(self) -> OutputFormat {
        match self {
            SourceFormat::Csv => OutputFormat::Csv,
            SourceFormat::Parquet => OutputFormat::Parquet,
            SourceFormat::JsonLines => OutputFormat::Json,
        }
    }
}

/// A lazy scan of the file: nothing is read until the query runs, and then in batches.
pub fn scan(path: &Path, format: SourceFormat) -> Result<LazyFrame, ContentError> {
    if !path.is_file() {
        return Err(ContentError::Io(format!("report file {} is not there", path.display())));
    }
    let glob_like = path.to_string_lossy().contains(['*', '?', '[']);
    let path = PlRefPath::try_from_path(path)?;
    Ok(match format {
        SourceFormat::Csv => LazyCsvReader::new(path)
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .with_glob(false)
            .finish()?,
        SourceFormat::Parquet => LazyFrame::scan_parquet(path, ScanArgsParquet { glob: false, ..Default::default() })?,
        // Polars' NDJSON reader always expands glob patterns (its `finish_no_glob` is unreachable!),
        // so a path that would be read as one is refused rather than widened to other files.
        SourceFormat::JsonLines => {
            if glob_like {
                return Err(ContentError::Io("the report file's path has glob characters, which the JSON lines reader would expand".to_string()));
            }
            LazyJsonLineReader::new(path).finish()?
        }
    })
}

fn literal(value: &Scalar) -> Expr {
    match value {
        Scalar::Bool(b) => lit(*b),
        Scalar::Number(Number(n)) => lit(*n),
        Scalar::Text(s) => lit(s.clone()),
    }
}

/// `column` tested as the predicate says. `in` is a chain of equalities (lists are short: at most
/// `MAX_VALUES`), which needs no Polars feature beyond the core expressions.
fn predicate(column: &str, test: Test<'_, Scalar>) -> Expr {
    let c = || col(column);
    match test {
        Test::In(values) => values.iter().map(|v| c().eq(literal(v))).reduce(Expr::or).unwrap_or(lit(false)),
        Test::NotIn(values) => values.iter().map(|v| c().neq(literal(v))).reduce(Expr::and).unwrap_or(lit(true)),
        Test::Eq(v) => c().eq(literal(v)),
        Test::Ne(v) => c().neq(literal(v)),
        Test::Gt(v) => c().gt(literal(v)),
        Test::Gte(v) => c().gt_eq(literal(v)),
        Test::Lt(v) => c().lt(literal(v)),
        Test::Lte(v) => c().lt_eq(literal(v)),
    }
}

/// The subscriber's rows and columns of the file, as a lazy query. A column the subscription names
/// and the file lacks is a [`ContentError::Mismatch`] naming it; `portfolio_ids` select rows only
/// when the file has a `portfolio_id` column (otherwise they selected the report as a whole).
pub fn select(path: &Path, format: SourceFormat, spec: &ContentSpec) -> Result<LazyFrame, ContentError> {
    let mut frame = scan(path, format)?;
    let schema = frame.collect_schema()?;
    let missing = |field: &str, name: &str| {
        ContentError::Mismatch(format!("{field} names column `{name}`, which the report's file does not have"))
    };
    let mut conditions = Vec::new();
    if !spec.portfolio_ids.is_empty() && schema.contains(PORTFOLIO_COLUMN) {
        let ids: Vec<Scalar> = spec.portfolio_ids.iter().cloned().map(Scalar::Text).collect();
        conditions.push(predicate(PORTFOLIO_COLUMN, Test::In(&ids)));
    }
    for (i, row) in spec.rows.iter().enumerate() {
        if !schema.contains(&row.column) {
            return Err(missing(&format!("filters.rows[{i}]"), &row.column));
        }
        let Some(test) = row.test() else {
            return Err(ContentError::Mismatch(format!("filters.rows[{i}] needs exactly one test")));
        };
        conditions.push(predicate(&row.column, test));
    }
    for (i, column) in spec.columns.iter().enumerate() {
        if !schema.contains(column) {
            return Err(missing(&format!("filters.columns[{i}]"), column));
        }
    }
    if let Some(condition) = conditions.into_iter().reduce(Expr::and) {
        frame = frame.filter(condition);
    }
    if !spec.columns.is_empty() {
        frame = frame.select(spec.columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
    }
    Ok(frame)
}

/// Content facts: `count(*)`, and for each numeric column its max, min, sum, mean and count of
/// non-null cells, all in one pass over the file.
pub fn facts(path: &Path, format: SourceFormat) -> Result<ContentFacts, ContentError> {
    let mut frame = scan(path, format)?;
    let schema = frame.collect_schema()?;
    let mut exprs = vec![len().cast(DataType::Float64).alias(fact_key(Aggregate::Count, "*"))];
    for (name, dtype) in schema.iter() {
        if !dtype.is_primitive_numeric() {
            continue;
        }
        for aggregate in Aggregate::ALL {
            let c = col(name.as_str());
            let expr = match aggregate {
                Aggregate::Max => c.max(),
                Aggregate::Min => c.min(),
                Aggregate::Sum => c.sum(),
                Aggregate::Mean => c.mean(),
                Aggregate::Count => c.count(),
            };
            exprs.push(expr.cast(DataType::Float64).alias(fact_key(aggregate, name.as_str())));
        }
    }
    let row = frame.select(exprs).collect()?;
    let mut facts = ContentFacts::new();
    for column in row.columns() {
        // An aggregate of no values (max of an empty or all-null column) is null: no fact.
        if let Some(value) = column.f64()?.get(0) {
            if value.is_finite() {
                facts.insert(column.name().to_string(), Number(value));
            }
        }
    }
    Ok(facts)
}
