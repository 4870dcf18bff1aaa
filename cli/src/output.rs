//! Printing: aligned tables for people, `-o json` for scripts (the API's JSON, unchanged).
use serde_json::Value;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// Prints rows as aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = widths[i])).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints JSON, pretty.
pub(crate) fn json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A JSON value as a table cell.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes for people.
pub(crate) fn bytes(value: &Value) -> String {
    match value.as_u64() {
        None => "-".into(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) if b < 1024 * 1024 * 1024 => format!("{:.1} MiB", b as f64 / 1048576.0),
        Some(b) => format!("{:.1} GiB", b as f64 / 1073741824.0),
    }
}

/// The details of a refused request (blockers of a not-ready database), as lines to append.
pub(crate) fn details(details: &Value) -> String {
    let mut text = String::new();
    for item in details.as_array().into_iter().flatten() {
        if let Some(blockers) = item["blockers"].as_array() {
            text.push_str(&format!("\n  {}:", cell(&item["database"])));
            for blocker in blockers {
                text.push_str(&format!("\n    - {} {}", cell(&blocker["message"]), objects(&blocker["objects"])));
                text.push_str(&format!("\n      fix: {}", cell(&blocker["remediation"])));
            }
        }
    }
    text
}

/// Objects of a finding, in brackets.
pub(crate) fn objects(objects: &Value) -> String {
    let names: Vec<String> = objects.as_array().into_iter().flatten().map(cell).collect();
    if names.is_empty() { String::new() } else { format!("[{}]", names.join(", ")) }
}
