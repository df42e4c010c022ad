//! Merging the layers and turning failures into one clear line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use toml::{Table, Value};

use crate::model::Config;

/// Environment variables that start with `WARD_` but are not configuration keys.
/// Secrets that must never sit in a config file are read from these directly.
const NON_CONFIG_ENV: &[&str] = &["WARD_MASTER_PASSPHRASE", "WARD_KEYS_PKCS11_PIN"];
/// Prefix reserved for the test suite's own variables (e.g. `WARD_TEST_POSTGRES_URL`).
const TEST_ENV_PREFIX: &str = "WARD_TEST_";

/// A configuration problem: which key, where its value came from, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key such as `server.listen`, or the file name for a syntax error.
    pub key: String,
    /// Where the offending value came from, when known.
    pub origin: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), origin: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{} (from {origin}): {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// The raw inputs to [`load`], lowest precedence first.
#[derive(Debug, Default)]
pub struct Layers {
    /// The config file's path and text, if `--config` was given.
    pub file: Option<(PathBuf, String)>,
    /// Environment variables; only those starting with `WARD_` are looked at.
    pub env: Vec<(String, String)>,
    /// Flag overrides: (flag as typed, dotted key, value).
    pub flags: Vec<(String, String, Value)>,
}

/// Builds the effective, validated configuration.
pub fn load(layers: Layers) -> Result<Config, ConfigError> {
    let mut tree = Table::new();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();

    if let Some((path, text)) = &layers.file {
        let name = path.display().to_string();
        let table: Table = toml::from_str(text).map_err(|e| ConfigError {
            key: name.clone(),
            origin: None,
            message: format!("not valid TOML: {}", one_line(e.message())),
        })?;
        for key in dotted_keys(&table, "") {
            origins.insert(key, format!("config file {name}"));
        }
        tree = table;
    }

    let defaults = Value::try_from(Config::default()).ok();
    let mut env: Vec<_> = layers.env.iter().filter(|(k, _)| k.starts_with("WARD_")).collect();
    env.sort();
    for (name, raw) in env {
        if NON_CONFIG_ENV.contains(&name.as_str()) || name.starts_with(TEST_ENV_PREFIX) {
            continue;
        }
        let (section, key) = split_env_name(name).ok_or_else(|| ConfigError {
            key: name.clone(),
            origin: None,
            message: "not a configuration variable (expected WARD_<SECTION>_<KEY>)".into(),
        })?;
        let section_defaults = defaults.as_ref().and_then(|d| d.get(&section));
        // `WARD_KEYS_PKCS11_MODULE` → `keys.pkcs11.module` when `[keys]` has a `pkcs11` table.
        let nested = section_defaults.and_then(|s| s.as_table()).and_then(|t| {
            t.iter().filter(|(_, v)| v.is_table()).find_map(|(sub, v)| {
                let rest = key.strip_prefix(sub.as_str())?.strip_prefix('_')?;
                Some((sub.clone(), rest.to_string(), v.get(rest).cloned()))
            })
        });
        let dotted = match nested {
            Some((sub, rest, expected)) => {
                let value = env_value(raw, expected.as_ref());
                let entry = tree.entry(section.clone()).or_insert_with(|| Value::Table(Table::new()));
                if !entry.is_table() {
                    *entry = Value::Table(Table::new());
                }
                if let Value::Table(t) = entry {
                    insert(t, &sub, &rest, value);
                }
                format!("{section}.{sub}.{rest}")
            }
            None => {
                let value = env_value(raw, section_defaults.and_then(|s| s.get(&key)));
                insert(&mut tree, &section, &key, value);
                format!("{section}.{key}")
            }
        };
        origins.insert(dotted, format!("environment variable {name}"));
    }

    for (flag, dotted, value) in layers.flags {
        let (section, key) = dotted.split_once('.').unwrap_or(("", dotted.as_str()));
        insert(&mut tree, section, key, value);
        origins.insert(dotted.clone(), format!("flag {flag}"));
    }

    let config: Config = serde_path_to_error::deserialize(Value::Table(tree)).map_err(|e| {
        let path = e.path().to_string();
        let message = one_line(&e.inner().to_string());
        let (key, message) = match unknown_field(&message) {
            // The path already ends with the unknown field's name.
            Some(field) if path.ends_with(field) => (path, "unknown key".to_string()),
            Some(field) if path == "." => (field.to_string(), "unknown key".to_string()),
            Some(field) => (format!("{path}.{field}"), "unknown key".to_string()),
            None => (path, message),
        };
        ConfigError { origin: origins.get(&key).cloned(), key, message }
    })?;
    config.validate().map_err(|mut e| {
        e.origin = origins.get(&e.key).cloned();
        e
    })?;
    Ok(config)
}

/// `WARD_SESSION_IDLE_TIMEOUT_S` → (`session`, `idle_timeout_s`). Section names hold no `_`.
fn split_env_name(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("WARD_")?;
    let (section, key) = rest.split_once('_')?;
    if section.is_empty() || key.is_empty() {
        return None;
    }
    Some((section.to_ascii_lowercase(), key.to_ascii_lowercase()))
}

/// Types an environment value like the default it replaces: strings stay strings,
/// anything else is read as a TOML value (numbers, booleans, arrays).
fn env_value(raw: &str, expected: Option<&Value>) -> Value {
    if matches!(expected, Some(Value::String(_))) {
        return Value::String(raw.to_string());
    }
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn insert(tree: &mut Table, section: &str, key: &str, value: Value) {
    if section.is_empty() {
        tree.insert(key.to_string(), value);
        return;
    }
    let entry = tree.entry(section.to_string()).or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    if let Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

fn dotted_keys(table: &Table, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let Value::Table(t) = v {
            out.extend(dotted_keys(t, &key));
        }
        out.push(key);
    }
    out
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DatabaseLocation;

    fn file(text: &str) -> Option<(PathBuf, String)> {
        Some((PathBuf::from("ward.toml"), text.to_string()))
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = load(Layers::default()).expect("defaults load");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert!(c.server.tls);
        assert_eq!(
            c.database_location().expect("location"),
            DatabaseLocation::Sqlite(PathBuf::from("./ward-data/ward.db"))
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let layers = Layers {
            file: file("[server]\nlisten = \"127.0.0.1:1000\"\nshutdown_grace_s = 3\n"),
            env: env(&[("WARD_SERVER_LISTEN", "127.0.0.1:2000"), ("WARD_SESSION_IDLE_TIMEOUT_S", "60")]),
            flags: vec![("--listen".into(), "server.listen".into(), Value::String("127.0.0.1:3000".into()))],
        };
        let c = load(layers).expect("loads");
        assert_eq!(c.server.listen.port(), 3000);
        assert_eq!(c.server.shutdown_grace_s, 3);
        assert_eq!(c.session.idle_timeout_s, 60);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let e =
            load(Layers { file: file("[server]\nlistn = \"x\"\n"), ..Default::default() }).expect_err("unknown key");
        assert_eq!(e.key, "server.listn");
        assert_eq!(e.to_string(), "server.listn (from config file ward.toml): unknown key");
    }

    #[test]
    fn unknown_section_and_env_var_are_named() {
        let e = load(Layers { file: file("[servr]\n"), ..Default::default() }).expect_err("section");
        assert_eq!(e.key, "servr");
        let e = load(Layers { env: env(&[("WARD_SERVER_LISTN", "1")]), ..Default::default() }).expect_err("env");
        assert_eq!(e.key, "server.listn");
        assert!(e.to_string().contains("WARD_SERVER_LISTN"), "{e}");
    }

    #[test]
    fn wrong_type_and_out_of_range_name_the_key() {
        let e = load(Layers { env: env(&[("WARD_SESSION_IDLE_TIMEOUT_S", "soon")]), ..Default::default() })
            .expect_err("type");
        assert_eq!(e.key, "session.idle_timeout_s");
        let e =
            load(Layers { file: file("[session]\nidle_timeout_s = 5\n"), ..Default::default() }).expect_err("range");
        assert_eq!(e.key, "session.idle_timeout_s");
        assert!(e.message.contains("between 10 and 43200"), "{e}");
    }

    #[test]
    fn database_urls_are_checked_without_echoing_secrets() {
        let bad = "postgres//user:hunter2@host/db";
        let e = load(Layers { file: file(&format!("[database]\nurl = \"{bad}\"\n")), ..Default::default() })
            .expect_err("malformed");
        assert_eq!(e.key, "database.url");
        assert!(!e.to_string().contains("hunter2"));
        let e = load(Layers { env: env(&[("WARD_DATABASE_URL", "mysql://h/db")]), ..Default::default() })
            .expect_err("scheme");
        assert!(e.message.contains("unsupported scheme"));
    }

    #[test]
    fn print_config_redacts_the_database_password() {
        let c = load(Layers {
            env: env(&[("WARD_DATABASE_URL", "postgres://ward:hunter2@db.internal/ward")]),
            ..Default::default()
        })
        .expect("loads");
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("db.internal"));
    }

    #[test]
    fn shortening_audit_retention_needs_an_explicit_setting() {
        let e = load(Layers { file: file("[audit]\nretention_days = 365\n"), ..Default::default() })
            .expect_err("too short");
        assert_eq!(e.key, "audit.retention_days");
        let ok = load(Layers {
            file: file("[audit]\nretention_days = 365\nallow_short_retention = true\n"),
            ..Default::default()
        });
        assert_eq!(ok.expect("explicit").audit.retention_days, 365);
    }

    #[test]
    fn pkcs11_settings_come_from_a_nested_table_or_the_environment() {
        let e = load(Layers { env: env(&[("WARD_KEYS_BACKEND", "pkcs11")]), ..Default::default() })
            .expect_err("module required");
        assert_eq!(e.key, "keys.pkcs11.module");
        let c = load(Layers {
            file: file("[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\ntoken_label = \"from-file\"\n"),
            env: env(&[("WARD_KEYS_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"), ("WARD_KEYS_CACHE_TTL_S", "0")]),
            ..Default::default()
        })
        .expect("loads");
        assert_eq!(c.keys.pkcs11.module.as_deref(), Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so")));
        assert_eq!((c.keys.pkcs11.token_label.as_str(), c.keys.cache_ttl_s), ("from-file", 0));
        assert_eq!(c.audited_settings().get("keys.pkcs11.token_label").map(String::as_str), Some("\"from-file\""));
        let e =
            load(Layers { env: env(&[("WARD_KEYS_PKCS11_SLOT", "1")]), ..Default::default() }).expect_err("unknown");
        assert_eq!(e.key, "keys.pkcs11.slot");
    }

    #[test]
    fn aws_kms_settings_come_from_a_nested_table_or_the_environment() {
        let e = load(Layers { env: env(&[("WARD_KEYS_BACKEND", "aws-kms")]), ..Default::default() })
            .expect_err("key id required");
        assert_eq!(e.key, "keys.aws_kms.key_id");
        let arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let c = load(Layers {
            file: file("[keys]\nbackend = \"aws-kms\"\n[keys.aws_kms]\nregion = \"eu-central-1\"\n"),
            env: env(&[
                ("WARD_KEYS_AWS_KMS_KEY_ID", arn),
                ("WARD_KEYS_AWS_KMS_ENDPOINT", "https://vpce-1.kms.eu-central-1.vpce.amazonaws.com"),
            ]),
            ..Default::default()
        })
        .expect("loads");
        assert_eq!(c.keys.aws_kms.key_id, arn);
        assert_eq!(c.keys.aws_kms.region.as_deref(), Some("eu-central-1"));
        assert_eq!(c.keys.aws_kms.endpoint.as_deref(), Some("https://vpce-1.kms.eu-central-1.vpce.amazonaws.com"));
        assert_eq!(
            c.audited_settings().get("keys.aws_kms.key_id").map(String::as_str),
            Some(format!("\"{arn}\"").as_str())
        );
        // A key id of digits only stays a string.
        let c = load(Layers {
            env: env(&[("WARD_KEYS_BACKEND", "aws-kms"), ("WARD_KEYS_AWS_KMS_KEY_ID", "1234")]),
            ..Default::default()
        })
        .expect("loads");
        assert_eq!(c.keys.aws_kms.key_id, "1234");
        let e = load(Layers { env: env(&[("WARD_KEYS_AWS_KMS_PROFILE", "x")]), ..Default::default() })
            .expect_err("unknown");
        assert_eq!(e.key, "keys.aws_kms.profile");
        assert!(e.to_string().contains("WARD_KEYS_AWS_KMS_PROFILE"), "{e}");
    }

    #[test]
    fn reserved_env_vars_are_not_config() {
        let c = load(Layers {
            env: env(&[("WARD_MASTER_PASSPHRASE", "x"), ("WARD_TEST_POSTGRES_URL", "y"), ("HOME", "/")]),
            ..Default::default()
        });
        assert!(c.is_ok());
    }

    #[test]
    fn files_settings_are_bounded_and_s3_needs_a_bucket_and_a_safe_endpoint() {
        let refused =
            |pairs: &[(&str, &str)]| load(Layers { env: env(pairs), ..Default::default() }).expect_err("refused").key;
        assert_eq!(refused(&[("WARD_FILES_BACKEND", "s3")]), "files.s3.bucket");
        assert_eq!(refused(&[("WARD_FILES_BACKEND", "ftp")]), "files.backend");
        assert_eq!(refused(&[("WARD_FILES_MAX_BYTES", "10")]), "files.max_bytes");
        assert_eq!(refused(&[("WARD_FILES_CLAMD_TIMEOUT_S", "0")]), "files.clamd_timeout_s");
        assert_eq!(refused(&[("WARD_FILES_ORPHAN_GRACE_S", "3600")]), "files.orphan_grace_s");
        assert_eq!(refused(&[("WARD_FILES_MAX_CONCURRENT_UPLOADS", "0")]), "files.max_concurrent_uploads");
        assert_eq!(refused(&[("WARD_FILES_ALLOWED_TYPES", "[\"text\"]")]), "files.allowed_types");
        assert_eq!(refused(&[("WARD_FILES_ALLOWED_TYPES", "[]")]), "files.allowed_types");
        let s3 = |endpoint: &str, http: &str| {
            load(Layers {
                env: env(&[
                    ("WARD_FILES_BACKEND", "s3"),
                    ("WARD_FILES_S3_BUCKET", "phi-files"),
                    ("WARD_FILES_S3_ENDPOINT", endpoint),
                    ("WARD_FILES_S3_ALLOW_HTTP", http),
                ]),
                ..Default::default()
            })
        };
        assert_eq!(
            s3("http://s3.internal:9000", "true").expect_err("plain http off loopback").key,
            "files.s3.endpoint"
        );
        assert_eq!(s3("http://127.0.0.1:9000", "false").expect_err("http not allowed").key, "files.s3.endpoint");
        let c = s3("http://127.0.0.1:9000", "true").expect("loopback with allow_http");
        assert_eq!(c.files.s3.bucket, "phi-files");
        assert!(s3("https://bucket.vpce-1.s3.eu-central-1.vpce.amazonaws.com", "false").is_ok());
        let settings = c.audited_settings();
        assert_eq!(settings.get("files.backend").map(String::as_str), Some("\"s3\""));
        assert_eq!(settings.get("files.s3.endpoint").map(String::as_str), Some("http://127.0.0.1:9000"));
    }
}
