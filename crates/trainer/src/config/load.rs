//! Reading a config: the file, `--set` overrides and sweeps' typed
//! overrides, with errors that name the file, the key and the line.

use super::{validate, Config, ConfigError, LoadedConfig};
use std::path::Path;

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// Finds the line of `section.key` (or of `[section]`) in the source, for
/// errors found after parsing.
pub fn locate(src: &str, dotted: &str) -> Option<usize> {
    let mut parts = dotted.splitn(2, '.');
    let section = parts.next()?;
    let key = parts.next();
    let mut in_section = false;
    for (i, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            in_section = line.trim_start_matches('[').trim_end_matches(']').trim() == section;
            if in_section && key.is_none() {
                return Some(i + 1);
            }
            continue;
        }
        if in_section {
            if let Some(k) = key {
                let name = line.split('=').next().unwrap_or("").trim();
                if name == k {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

fn deserialize(src: &str, file: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(src);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(src, s.start));
        let key = if path.is_empty() || path == "." {
            None
        } else {
            Some(path)
        };
        ConfigError {
            file: file.to_string(),
            line,
            key,
            msg: inner.message().to_string(),
        }
    })
}

/// One override of a config value: a dotted key and a TOML value. The
/// command line's `--set section.key=value` parses into one; a sweep's
/// trials build theirs directly.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// `section.key`.
    pub key: String,
    /// The value.
    pub value: toml::Value,
}

/// A value as `--set` and sweep files give it: read as TOML; a bare word
/// that is not valid TOML is taken as a string.
pub fn toml_value(raw: &str) -> toml::Value {
    let raw = raw.trim();
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

impl Override {
    /// Parses `section.key=value`. The value is read as TOML; a bare word
    /// that is not valid TOML is taken as a string.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let (key, raw) = spec.split_once('=').ok_or_else(|| {
            set_error(
                None,
                format!("'{spec}' is not of the form section.key=value"),
            )
        })?;
        let value = toml_value(raw);
        Ok(Self {
            key: key.trim().to_string(),
            value,
        })
    }

    /// Puts the value into a config table.
    pub fn apply(&self, table: &mut toml::Table) -> Result<(), ConfigError> {
        let key = &self.key;
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(set_error(
                Some(key.clone()),
                "override keys have the form section.key, e.g. train.lr".into(),
            ));
        }
        let mut cur = table;
        for p in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry
                .as_table_mut()
                .ok_or_else(|| set_error(Some(key.clone()), format!("`{p}` is not a section")))?;
        }
        cur.insert(parts[parts.len() - 1].to_string(), self.value.clone());
        Ok(())
    }
}

fn set_error(key: Option<String>, msg: String) -> ConfigError {
    ConfigError {
        file: "--set".into(),
        line: None,
        key,
        msg,
    }
}

/// Reads, overrides and validates a config file.
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        key: None,
        msg: format!("cannot read: {e}"),
    })?;
    let config = parse(&src, &file, overrides)?;
    Ok(LoadedConfig {
        config,
        path: path.to_path_buf(),
    })
}

/// Parses and validates config text (the file name is for messages).
pub fn parse(src: &str, file: &str, overrides: &[String]) -> Result<Config, ConfigError> {
    let typed: Vec<Override> = overrides
        .iter()
        .map(|o| Override::parse(o))
        .collect::<Result<_, _>>()?;
    parse_with(src, file, &typed)
}

/// [`parse`] with typed overrides.
pub fn parse_with(src: &str, file: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    // Parse the file alone first so that its own errors carry its lines.
    let mut config = deserialize(src, file)?;
    if !overrides.is_empty() {
        let mut table: toml::Table = toml::from_str(src).map_err(|e| ConfigError {
            file: file.into(),
            line: e.span().map(|s| line_of(src, s.start)),
            key: None,
            msg: e.message().to_string(),
        })?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        let text = toml::to_string(&table).expect("a table serialises");
        config = deserialize(&text, "--set").map_err(|mut e| {
            e.line = None;
            e
        })?;
    }
    validate(&config).map_err(|(key, msg)| {
        let overridden = overrides.iter().any(|o| o.key == key);
        let (file, line) = if overridden {
            ("--set".to_string(), None)
        } else {
            (file.to_string(), locate(src, &key))
        };
        ConfigError {
            file,
            line,
            key: Some(key),
            msg,
        }
    })?;
    Ok(config)
}
