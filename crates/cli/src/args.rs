//! Parsing shared by the subcommands' arguments.

/// A comma-separated list, each item parsed by `parse`; an error names the
/// flag and the item.
pub fn list<T>(
    flag: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|x| parse(x.trim()).map_err(|e| format!("{flag}: '{}': {e}", x.trim())))
        .collect()
}
