//! `SLUICE__SECTION__KEY` environment overrides applied to the parsed TOML table
//! before it is deserialized, so overridden keys are checked like written ones.
//!
//! An environment value has no type. It is taken verbatim as a string unless it
//! reads as a TOML number, boolean or list *and* the key wants one: a password of
//! digits stays a string, a quoted value keeps its quotes, and `7` still sets a
//! count. [`Override::dotted`] lets the loader find the override a type error is
//! about and retry it as the string it was.

use super::ConfigError;

/// One `SLUICE__…` variable.
#[derive(Debug)]
pub(super) struct Override {
    /// The variable's name, for errors.
    pub var: String,
    /// Lower-cased path parts (`["kafka", "brokers"]`, numeric parts index lists).
    parts: Vec<String>,
    /// The variable's value as written.
    raw: String,
    /// Set once the key turned out to want a string: the raw value is used.
    pub literal: bool,
}

impl Override {
    /// `None` when `var` does not start with the override prefix.
    pub(super) fn from_env(var: &str, value: &str) -> Option<Result<Override, ConfigError>> {
        let path = var.strip_prefix(super::ENV_PREFIX)?;
        let mut parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(String::is_empty) {
            return Some(Err(ConfigError::key(
                var,
                "malformed override variable name",
            )));
        }
        // librdkafka's properties are all strings (and hold the credentials); their
        // dots may be written `__` (`…__OPTIONS__SASL__PASSWORD` = `sasl.password`).
        let literal = parts.len() > 2 && parts[0] == "kafka" && parts[1] == "options";
        if literal {
            let property = parts[2..].join(".");
            parts.truncate(2);
            parts.push(property);
        }
        Some(Ok(Override {
            var: var.to_string(),
            parts,
            raw: value.to_string(),
            literal,
        }))
    }

    /// The key as deserialization errors name it: `batch.max_events`,
    /// `workspaces[0].site_id`.
    pub(super) fn dotted(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if part.parse::<usize>().is_ok() {
                out.push_str(&format!("[{part}]"));
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(part);
            }
        }
        out
    }

    /// Whether reading the value as TOML gave it a type other than string, so
    /// that retrying it as a literal string could change the outcome.
    pub(super) fn typed(&self) -> bool {
        !self.literal && !matches!(self.value(), toml::Value::String(_))
    }

    fn value(&self) -> toml::Value {
        let raw = toml::Value::String(self.raw.clone());
        if self.literal {
            return raw;
        }
        match format!("v = {}", self.raw)
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
        {
            Some(toml::Value::String(_)) | None => raw,
            Some(typed) => typed,
        }
    }

    /// Sets the key in `table`.
    pub(super) fn apply(&self, table: &mut toml::Table) -> Result<(), ConfigError> {
        apply_override(table, &self.var, &self.parts, self.value())
    }
}

/// Sets the key named by `parts` to `parsed`.
fn apply_override(
    table: &mut toml::Table,
    var: &str,
    parts: &[String],
    parsed: toml::Value,
) -> Result<(), ConfigError> {
    let mut node = table;
    let (last, parents) = parts.split_last().expect("split on a non-empty string");
    for (depth, part) in parents.iter().enumerate() {
        let next_is_index = parts[depth + 1].parse::<usize>().is_ok();
        let entry = node.entry(part.clone()).or_insert_with(|| {
            if next_is_index {
                toml::Value::Array(Vec::new())
            } else {
                toml::Value::Table(toml::Table::new())
            }
        });
        node = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => {
                let index: usize = parts[depth + 1].parse().map_err(|_| {
                    ConfigError::key(var, format!("`{part}` is a list: expected an index"))
                })?;
                let item = items.get_mut(index).ok_or_else(|| {
                    ConfigError::key(var, format!("`{part}` has no entry {index}"))
                })?;
                // The index part is consumed here; skip it in the walk below.
                match item {
                    toml::Value::Table(t) => return set_in(t, &parts[depth + 2..], var, parsed),
                    _ => return Err(ConfigError::key(var, "does not name a table")),
                }
            }
            _ => return Err(ConfigError::key(var, format!("`{part}` is not a section"))),
        };
    }
    set_leaf(node, last, parsed);
    Ok(())
}

fn set_in(
    table: &mut toml::Table,
    rest: &[String],
    var: &str,
    value: toml::Value,
) -> Result<(), ConfigError> {
    match rest {
        [] => Err(ConfigError::key(var, "names a table, not a key")),
        [leaf] => {
            set_leaf(table, leaf, value);
            Ok(())
        }
        [head, tail @ ..] => match table
            .entry(head.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => set_in(t, tail, var, value),
            _ => Err(ConfigError::key(var, format!("`{head}` is not a section"))),
        },
    }
}

fn set_leaf(table: &mut toml::Table, key: &str, value: toml::Value) {
    // A list key given a plain string takes it as comma-separated items.
    let value = match (table.get(key), value) {
        (Some(toml::Value::Array(_)), toml::Value::String(s)) => toml::Value::Array(
            s.split(',')
                .map(|p| toml::Value::String(p.trim().to_string()))
                .collect(),
        ),
        (_, v) => v,
    };
    table.insert(key.to_string(), value);
}
