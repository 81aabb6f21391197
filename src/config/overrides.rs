//! `SLUICE__SECTION__KEY` environment overrides applied to the parsed TOML table
//! before it is deserialized, so overridden keys are checked like written ones.

use super::ConfigError;

/// Sets the key named by `path` (`SECTION__KEY`, numeric parts index arrays) to
/// `value`, read as a TOML value when it parses as one and as a string otherwise.
pub(super) fn apply_override(
    table: &mut toml::Table,
    var: &str,
    path: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::key(var, "malformed override variable name"));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));

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
