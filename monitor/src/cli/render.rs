//! Daemon replies for people: JSON flattened into `key  value` rows, and aligned tables.

use std::io::{self, Write as _};

use serde_json::Value;

/// Space between columns.
const GAP: usize = 2;

/// Every leaf of `value` as a dotted key (`counters.findings`, `tasks.0.id`) and its text.
/// Arrays of plain values stay on one row, comma-separated.
pub fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    flatten_into(String::new(), value, &mut rows);
    rows
}

fn flatten_into(key: String, value: &Value, rows: &mut Vec<(String, String)>) {
    let join = |child: &str| if key.is_empty() { child.to_owned() } else { format!("{key}.{child}") };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (name, child) in map {
                flatten_into(join(name), child, rows);
            }
        }
        Value::Array(items) if items.iter().any(|item| item.is_object() || item.is_array()) => {
            for (index, child) in items.iter().enumerate() {
                flatten_into(join(&index.to_string()), child, rows);
            }
        }
        _ => rows.push((key, cell(value))),
    }
}

/// One value as table text: strings unquoted, `-` for null or empty, lists comma-separated.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) if items.iter().all(|item| !item.is_object() && !item.is_array()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        Value::Object(map) if map.is_empty() => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    rows.iter().map(|(key, value)| format!("{key:<width$}{:GAP$}{value}\n", "")).collect()
}

/// A header and rows, each column as wide as its widest cell (the last one unpadded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|name| name.len()).collect();
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|name| (*name).to_owned()).collect();
    std::iter::once(&header).chain(rows).map(|row| line(&widths, row)).collect()
}

/// One row padded to the given column widths, with its newline.
pub fn line(widths: &[usize], row: &[String]) -> String {
    let mut text = String::new();
    for (index, cell) in row.iter().enumerate() {
        text.push_str(cell);
        if index + 1 < row.len() {
            let pad = widths.get(index).copied().unwrap_or(0).saturating_sub(cell.chars().count()) + GAP;
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    format!("{}\n", text.trim_end())
}

/// Writes to stdout. `Ok(false)` when the reader has gone (`credwatch findings | head`).
pub fn print(text: &str) -> io::Result<bool> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flattens_nested_objects_with_dotted_keys() {
        let status = json!({
            "tier": "tracepoint",
            "counters": {"findings": 3, "events": {"exec": 10}},
            "secrets": ["a", "b"],
            "tasks": [{"id": "t1"}],
            "empty": [],
        });
        let rows = flatten(&status);
        let rows: Vec<(&str, &str)> = rows.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        assert_eq!(
            rows,
            [
                ("counters.events.exec", "10"),
                ("counters.findings", "3"),
                ("empty", "-"),
                ("secrets", "a,b"),
                ("tasks.0.id", "t1"),
                ("tier", "tracepoint"),
            ]
        );
    }

    #[test]
    fn aligns_keys_and_columns() {
        let rows = vec![("a".to_owned(), "1".to_owned()), ("long.key".to_owned(), "2".to_owned())];
        assert_eq!(key_values(&rows), "a         1\nlong.key  2\n");
        let table = table(&["ID", "STATE"], &[vec!["build-7".into(), "active".into()], vec!["x".into(), "-".into()]]);
        assert_eq!(table, "ID       STATE\nbuild-7  active\nx        -\n");
    }
}
