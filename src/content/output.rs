//! Writing the subscriber's rows in the format they prefer. CSV, JSON lines and Parquet are Polars
//! sinks: the query streams from the source file to the output in batches. XLSX has no Polars
//! writer: the selected rows are collected (only those, never the whole source) and written with
//! rust_xlsxwriter; a sheet holds at most 1,048,575 data rows, so more is refused.

use std::path::Path;

use dataflows::content::OutputFormat;
use polars::prelude::*;
use rust_xlsxwriter::Workbook;

use super::ContentError;

/// Excel's row limit, less the header row.
const XLSX_MAX_ROWS: usize = 1_048_575;

/// Runs `frame` into a new file at `path`.
pub fn write(frame: LazyFrame, format: OutputFormat, path: &Path) -> Result<(), ContentError> {
    let file_format = match format {
        OutputFormat::Csv => FileWriteFormat::Csv(CsvWriterOptions::default()),
        OutputFormat::Json => FileWriteFormat::NDJson(NDJsonWriterOptions::default()),
        OutputFormat::Parquet => FileWriteFormat::Parquet(Arc::new(ParquetWriteOptions::default())),
        OutputFormat::Xlsx => return write_xlsx(frame, path),
    };
    sink(frame, file_format, path)
}

/// Runs `frame` into the staged Parquet copy of a text source at `path`: uncompressed, since it is
/// read once per subscriber and kept only a while, so decompressing would cost every reader more
/// than the disk it saves.
pub fn stage(frame: LazyFrame, path: &Path) -> Result<(), ContentError> {
    let options = ParquetWriteOptions { compression: ParquetCompression::Uncompressed, ..Default::default() };
    sink(frame, FileWriteFormat::Parquet(Arc::new(options)), path)
}

fn sink(frame: LazyFrame, file_format: FileWriteFormat, path: &Path) -> Result<(), ContentError> {
    let target = SinkTarget::Path(PlRefPath::try_from_path(path)?);
    frame.sink(SinkDestination::File { target }, file_format, UnifiedSinkArgs::default())?.collect()?;
    Ok(())
}

fn write_xlsx(frame: LazyFrame, path: &Path) -> Result<(), ContentError> {
    let table = frame.collect()?;
    if table.height() > XLSX_MAX_ROWS {
        return Err(ContentError::Mismatch(format!(
            "{} rows selected; an XLSX sheet holds at most {XLSX_MAX_ROWS}: choose CSV, JSON or PARQUET, or filter more rows",
            table.height()
        )));
    }
    let xlsx = |e: rust_xlsxwriter::XlsxError| ContentError::Query(format!("writing XLSX: {e}"));
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    for (c, column) in table.columns().iter().enumerate() {
        let c = u16::try_from(c).map_err(|_| ContentError::Mismatch("more than 65,535 columns for XLSX".into()))?;
        sheet.write_string(0, c, column.name().as_str()).map_err(xlsx)?;
        let dtype = column.dtype();
        if dtype.is_bool() {
            for (r, value) in column.bool()?.iter().enumerate() {
                if let Some(v) = value {
                    sheet.write_boolean(r as u32 + 1, c, v).map_err(xlsx)?;
                }
            }
        } else if dtype.is_primitive_numeric() {
            let values = column.cast(&DataType::Float64)?;
            for (r, value) in values.f64()?.iter().enumerate() {
                if let Some(v) = value {
                    sheet.write_number(r as u32 + 1, c, v).map_err(xlsx)?;
                }
            }
        } else {
            let values = column.cast(&DataType::String)?;
            for (r, value) in values.str()?.iter().enumerate() {
                if let Some(v) = value {
                    sheet.write_string(r as u32 + 1, c, v).map_err(xlsx)?;
                }
            }
        }
    }
    workbook.save(path).map_err(|e| match e {
        rust_xlsxwriter::XlsxError::IoError(io) => ContentError::Io(format!("writing {}: {io}", path.display())),
        other => xlsx(other),
    })
}
