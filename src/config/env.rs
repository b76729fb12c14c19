//! Every environment variable forewarn reads, in one place ([`VARIABLES`]); the rest of the
//! library reads none (configuration is parsed once at the edge and passed down).

use super::ConfigError;

/// An environment variable and what it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// The configuration key it sets (`section.key`), if it sets one.
    pub key: Option<(&'static str, &'static str)>,
    pub meaning: &'static str,
}

/// The prefix of `FOREWARN_<SECTION>__<KEY>`, which sets any key.
pub const KEY_PREFIX: &str = "FOREWARN_";
/// Between the section and the key in `FOREWARN_<SECTION>__<KEY>`.
pub const KEY_SEPARATOR: &str = "__";

/// The variables with names of their own. Any other key is `FOREWARN_<SECTION>__<KEY>`
/// (`FOREWARN_INGEST__SHARED_GROUP=ingest`); an empty value unsets the key.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "DATABASE_URL",
        key: Some(("database", "url")),
        meaning: "the PostgreSQL/TimescaleDB URL; unset: a private cluster under embedded.data_dir",
    },
    Variable {
        name: "DATABASE_URL_FILE",
        key: None,
        meaning: "a file holding the database URL (a mounted secret), instead of DATABASE_URL",
    },
    Variable {
        name: "MQTT_URL",
        key: Some(("mqtt", "url")),
        meaning: "the broker URL (mqtt:// or mqtts://); unset: an embedded broker",
    },
    Variable {
        name: "MQTT_PASSWORD_FILE",
        key: Some(("mqtt", "password_file")),
        meaning: "a file holding the broker password (a mounted secret)",
    },
    Variable {
        name: "FOREWARN_HTTP_ADDR",
        key: Some(("http", "addr")),
        meaning: "the HTTP listen address",
    },
    Variable {
        name: "FOREWARN_CONFIG",
        key: None,
        meaning: "the configuration file (default: forewarn.toml when it exists)",
    },
    Variable {
        name: "HOSTNAME",
        key: None,
        meaning: "the host name for the default mqtt.client_id where /proc has none",
    },
    Variable {
        name: "RUST_LOG",
        key: None,
        meaning: "a tracing filter that overrides log.filter",
    },
];

/// What the environment variable `name` sets: `Ok(None)` when it sets no key (not ours,
/// or one read elsewhere), the section and key otherwise. `sections` are the known
/// section names (the default configuration's), so a misspelt section is an error, not a
/// silently ignored variable.
pub fn key_of(name: &str, sections: &[String]) -> Result<Option<(String, String)>, ConfigError> {
    if let Some(variable) = VARIABLES.iter().find(|v| v.name == name) {
        return Ok(variable
            .key
            .map(|(section, key)| (section.to_string(), key.to_string())));
    }
    let Some(rest) = name.strip_prefix(KEY_PREFIX) else {
        return Ok(None);
    };
    let Some((section, key)) = rest.split_once(KEY_SEPARATOR) else {
        // Cannot be a key: the kubelet sets FOREWARN_SERVICE_HOST, FOREWARN_PORT_8080_TCP…
        // for a Service named forewarn. See [`is_ignored`].
        return Ok(None);
    };
    let lower = section.to_ascii_lowercase();
    if !sections.contains(&lower) {
        return Err(ConfigError::BadEnvName {
            name: format!("{KEY_PREFIX}{section}{KEY_SEPARATOR}…"),
        });
    }
    Ok(Some((lower, key.to_ascii_lowercase())))
}

/// A variable with forewarn's prefix that cannot name a key (no `__`, and not one of
/// [`VARIABLES`]): ignored, and the caller warns about it. A variable with `__` and an
/// unknown section or key stays an error, since it can only be a misspelt key.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with(KEY_PREFIX)
        && !name.contains(KEY_SEPARATOR)
        && !VARIABLES.iter().any(|v| v.name == name)
}

/// Environment values are strings; each is converted to the type of the key it sets, as the
/// serialized default configuration shows (`FOREWARN_INGEST__AUTO_REGISTER=false` is the
/// boolean, `FOREWARN_MQTT__CLIENT_ID=1234` stays the string "1234"). A key with no default
/// value is an `Option` that is `None` (`database.url`, `mqtt.url`, `ingest.shared_group`),
/// and those are strings; optional durations serialize as `"off"`, so they have one; an
/// unknown key stays a string and deserialization names it. The error is what was expected.
pub(crate) fn env_value(
    name: &str,
    value: &str,
    default: Option<&toml::Value>,
) -> Result<toml::Value, String> {
    let text = value.trim();
    match default {
        None | Some(toml::Value::String(_)) => Ok(toml::Value::String(value.to_string())),
        Some(toml::Value::Integer(_)) => text
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "an integer".to_string()),
        Some(toml::Value::Float(_)) => text
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "a number".to_string()),
        Some(toml::Value::Boolean(_)) => text
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| "true or false".to_string()),
        Some(toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_)) => {
            Err(format!(
                "a value the environment cannot give ({name} names a list or table: set it in the config file)"
            ))
        }
    }
}
