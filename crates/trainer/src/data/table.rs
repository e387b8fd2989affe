//! `dataset = "csv"`: a table per split with a header row, one named label
//! column (class indices 0..=255, or class names mapped in sorted order)
//! and numeric feature columns. The test table may order its columns
//! differently: they are matched by name. Every bad cell names the file,
//! its line and its column.

use super::{corrupt, DataError, Split};
use std::collections::BTreeSet;
use std::path::Path;

/// One table as read: features row-major, labels as written.
struct Raw {
    x: Vec<f32>,
    labels: Vec<(String, u64)>,
}

/// The train and test splits, the feature count, and the class names when
/// the labels are names (`None`: they are class indices).
pub(crate) type Tables = (Split, Split, usize, Option<Vec<String>>);

/// Reads both tables; `label` names the label column.
pub(crate) fn load(train: &Path, test: &Path, label: &str) -> Result<Tables, DataError> {
    let (features, raw_train) = read(train, label, None)?;
    let (_, raw_test) = read(test, label, Some(&features))?;
    let numeric = raw_train
        .labels
        .iter()
        .all(|(l, _)| l.trim().parse::<u8>().is_ok());
    let names: Option<Vec<String>> = (!numeric).then(|| {
        let set: BTreeSet<&str> = raw_train.labels.iter().map(|(l, _)| l.trim()).collect();
        set.into_iter().map(str::to_string).collect()
    });
    if names.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(corrupt(
            train,
            format!("column `{label}` names more than 256 classes"),
        ));
    }
    let index = |path: &Path, raw: &Raw| -> Result<Vec<u8>, DataError> {
        raw.labels
            .iter()
            .map(|(l, line)| {
                let l = l.trim();
                let found = match &names {
                    None => l.parse::<u8>().ok(),
                    Some(n) => n
                        .binary_search_by(|c| c.as_str().cmp(l))
                        .ok()
                        .map(|i| i as u8),
                };
                found.ok_or_else(|| {
                    let what = if names.is_some() {
                        "a class the training table does not have"
                    } else {
                        "not a class index 0..=255"
                    };
                    corrupt(
                        path,
                        format!("line {line}, column `{label}`: {l:?} is {what}"),
                    )
                })
            })
            .collect()
    };
    let (train_y, test_y) = (index(train, &raw_train)?, index(test, &raw_test)?);
    let train_split = Split::new(raw_train.x, train_y);
    let test_split = Split::new(raw_test.x, test_y);
    Ok((train_split, test_split, features.len(), names))
}

/// Reads one table. `want`: the feature columns in the order the training
/// table has them (the test table's are matched to it by name).
fn read(
    path: &Path,
    label: &str,
    want: Option<&[String]>,
) -> Result<(Vec<String>, Raw), DataError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| corrupt(path, format!("cannot read as CSV: {e}")))?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| corrupt(path, format!("no header row: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let label_col = header.iter().position(|h| h == label).ok_or_else(|| {
        corrupt(
            path,
            format!(
                "no column `{label}` (data.label); its columns: {}",
                header.join(", ")
            ),
        )
    })?;
    let mine: Vec<String> = header.iter().filter(|h| *h != label).cloned().collect();
    // Column of the file for each feature, in the training table's order.
    let order: Vec<usize> = match want {
        None => (0..header.len()).filter(|&i| i != label_col).collect(),
        Some(w) => {
            if w.len() != mine.len() || w.iter().any(|c| !mine.contains(c)) {
                return Err(corrupt(
                    path,
                    format!(
                        "its feature columns ({}) are not the training table's ({})",
                        mine.join(", "),
                        w.join(", ")
                    ),
                ));
            }
            w.iter()
                .map(|c| header.iter().position(|h| h == c).expect("checked"))
                .collect()
        }
    };
    if order.is_empty() {
        return Err(corrupt(path, "no feature columns besides the label"));
    }
    let mut raw = Raw {
        x: Vec::new(),
        labels: Vec::new(),
    };
    for (row, rec) in r.records().enumerate() {
        let line = row as u64 + 2;
        let rec = rec.map_err(|e| corrupt(path, format!("line {line}: {e}")))?;
        if rec.len() != header.len() {
            return Err(corrupt(
                path,
                format!(
                    "line {line}: {} fields, the header has {}",
                    rec.len(),
                    header.len()
                ),
            ));
        }
        for &c in &order {
            let cell = &rec[c];
            let v: f32 = cell
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| {
                    let what = if cell.is_empty() {
                        "missing".to_string()
                    } else {
                        format!("{cell:?} is not a number")
                    };
                    corrupt(path, format!("line {line}, column `{}`: {what}", header[c]))
                })?;
            raw.x.push(v);
        }
        raw.labels.push((rec[label_col].to_string(), line));
    }
    if raw.labels.is_empty() {
        return Err(corrupt(path, "no data rows"));
    }
    Ok((want.map_or(mine, <[String]>::to_vec), raw))
}
