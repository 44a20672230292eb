//! Tests of the loader, with temporary files and explicit environment lists
//! (never the process environment, which tests running in parallel share).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::{NamedTempFile, TempDir};

use crate::{ConfigError, Loader, Origin, Secret, redacted_toml};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Config {
    kafka: Kafka,
    postgres: Postgres,
    #[serde(default)]
    sinks: Vec<Sink>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Kafka {
    brokers: String,
    batch_size: u32,
    linger_ms: u64,
    compression: Option<String>,
    sasl_password: Option<Secret>,
    tls: Tls,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Tls {
    enabled: bool,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Postgres {
    url: String,
    pool_size: u16,
    password: Option<Secret>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Sink {
    topic: String,
    partitions: u32,
}

const DEFAULTS: &str = r#"
[kafka]
brokers = "localhost:9092"
batch_size = 100
linger_ms = 5

[kafka.tls]
enabled = false

[postgres]
url = "postgres://localhost/vigie"
pool_size = 4
"#;

const SECRETS: [&str; 2] = ["postgres.password", "kafka.sasl_password"];

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn write_file(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

fn loader(file: Option<&Path>, env: &[(&str, &str)]) -> Loader {
    let mut loader = Loader::new(DEFAULTS)
        .env_vars(env.iter().map(|(k, v)| (*k, *v)))
        .secret_keys(SECRETS);
    if let Some(path) = file {
        loader = loader.file(path);
    }
    loader
}

fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    loader(file, env).load()
}

fn load_err(file: Option<&Path>, env: &[(&str, &str)]) -> ConfigError {
    match load(file, env) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

fn file_line(err: &ConfigError) -> Option<usize> {
    let origin = match err {
        ConfigError::Syntax { origin, .. } | ConfigError::SecretInFile { origin, .. } => {
            Some(origin)
        }
        ConfigError::UnknownKey { origin, .. } | ConfigError::InvalidValue { origin, .. } => {
            origin.as_ref()
        }
        _ => None,
    };
    match origin {
        Some(Origin::File { line, .. }) => *line,
        _ => None,
    }
}

#[test]
fn defaults_only() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config.kafka.brokers, "localhost:9092");
    assert_eq!(config.kafka.batch_size, 100);
    assert_eq!(config.kafka.linger_ms, 5);
    assert!(!config.kafka.tls.enabled);
    assert_eq!(config.kafka.compression, None);
    assert_eq!(config.postgres.pool_size, 4);
    assert!(config.sinks.is_empty());
}

#[test]
fn file_overrides_defaults() {
    let file = write_file(
        r#"
[kafka]
brokers = "kafka-1:9092"
compression = "zstd"

[kafka.tls]
enabled = true
"#,
    );
    let config = load(Some(file.path()), &[]).unwrap();
    assert_eq!(config.kafka.brokers, "kafka-1:9092");
    assert_eq!(config.kafka.compression.as_deref(), Some("zstd"));
    assert!(config.kafka.tls.enabled);
    // Keys the file leaves alone keep their defaults.
    assert_eq!(config.kafka.batch_size, 100);
    assert_eq!(config.postgres.url, "postgres://localhost/vigie");
}

#[test]
fn env_overrides_file() {
    let file = write_file("[kafka]\nbrokers = \"from-file:9092\"\nbatch_size = 7\n");
    let config = load(
        Some(file.path()),
        &[
            ("VIGIE__KAFKA__BROKERS", "from-env:9092"),
            ("VIGIE__KAFKA__LINGER_MS", "250"),
            ("OTHER__KAFKA__BROKERS", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.kafka.brokers, "from-env:9092");
    assert_eq!(config.kafka.linger_ms, 250);
    assert_eq!(config.kafka.batch_size, 7);
}

#[test]
fn nested_env_keys_and_value_forms() {
    let config = load(
        None,
        &[
            ("VIGIE__KAFKA__TLS__ENABLED", "true"),
            ("vigie__postgres__POOL_SIZE", "12"),
            ("VIGIE__KAFKA__COMPRESSION", "\"42\""),
            (
                "VIGIE__SINKS",
                "[{topic=a,partitions=3},{topic=b,partitions=1}]",
            ),
        ],
    )
    .unwrap();
    assert!(config.kafka.tls.enabled);
    assert_eq!(config.postgres.pool_size, 12);
    // A quoted value stays a string even if it looks like a number.
    assert_eq!(config.kafka.compression.as_deref(), Some("42"));
    assert_eq!(
        config.sinks,
        vec![
            Sink {
                topic: "a".into(),
                partitions: 3
            },
            Sink {
                topic: "b".into(),
                partitions: 1
            },
        ]
    );
}

#[test]
fn env_list_value() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lists {
        kafka: KafkaList,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KafkaList {
        brokers: Vec<String>,
    }
    let lists: Lists = Loader::new("[kafka]\nbrokers = [\"x:1\"]\n")
        .env_vars([("VIGIE__KAFKA__BROKERS", "[a:1,b:2]")])
        .load()
        .unwrap();
    assert_eq!(lists.kafka.brokers, ["a:1", "b:2"]);
}

#[test]
fn env_prefix_can_change() {
    let config: Config = Loader::new(DEFAULTS)
        .env_prefix("APP_")
        .env_vars([
            ("APP_KAFKA__BATCH_SIZE", "9"),
            ("VIGIE__KAFKA__BATCH_SIZE", "1"),
        ])
        .load()
        .unwrap();
    assert_eq!(config.kafka.batch_size, 9);
}

#[test]
fn unknown_key_in_nested_table_names_key_and_line() {
    let file = write_file(
        "# Vigie config\n\
         \n\
         [kafka]\n\
         brokers = \"k:9092\"\n\
         \n\
         [kafka.tls]\n\
         enabled = true\n\
         verify_hostnme = false\n",
    );
    let err = load_err(Some(file.path()), &[]);
    match &err {
        ConfigError::UnknownKey { key, expected, .. } => {
            assert_eq!(key, "kafka.tls.verify_hostnme");
            assert_eq!(expected, &["enabled"]);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(file_line(&err), Some(8));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("config file {}, line 8: ", file.path().display())),
        "{msg}"
    );
    assert!(
        msg.contains("unknown key `kafka.tls.verify_hostnme` (expected one of: enabled)"),
        "{msg}"
    );
}

#[test]
fn unknown_key_as_dotted_key_and_inline_table() {
    let file = write_file(
        "[kafka]\n\
         brokers = \"k:9092\"\n\
         batch_sise = 10\n",
    );
    let err = load_err(Some(file.path()), &[]);
    assert_eq!(file_line(&err), Some(3), "{err}");
    assert!(err.to_string().contains(
        "unknown key `kafka.batch_sise` (expected one of: brokers, batch_size, linger_ms"
    ));

    let file =
        write_file("postgres.url = \"x\"\n\n\nkafka = { tls = { enabled = true, extra = 1 } }\n");
    let err = load_err(Some(file.path()), &[]);
    assert_eq!(file_line(&err), Some(4), "{err}");
    assert!(err.to_string().contains("`kafka.tls.extra`"), "{err}");
}

#[test]
fn unknown_top_level_key() {
    let file = write_file("[kafka]\nbrokers = \"k\"\n\n[postgress]\nurl = \"x\"\n");
    let err = load_err(Some(file.path()), &[]);
    assert_eq!(file_line(&err), Some(4), "{err}");
    assert!(err.to_string().contains("unknown key `postgress`"), "{err}");
}

#[test]
fn unknown_key_in_array_of_tables() {
    let file = write_file(
        "[[sinks]]\n\
         topic = \"a\"\n\
         partitions = 1\n\
         \n\
         [[sinks]]\n\
         topic = \"b\"\n\
         partitons = 2\n",
    );
    let err = load_err(Some(file.path()), &[]);
    assert_eq!(file_line(&err), Some(7), "{err}");
    assert!(err.to_string().contains("`sinks[1].partitons`"), "{err}");
}

#[test]
fn wrong_type_in_file_names_key_and_line() {
    let file = write_file(
        "[postgres]\n\
         url = \"postgres://db/vigie\"\n\
         pool_size = \"lots\"\n",
    );
    let err = load_err(Some(file.path()), &[]);
    match &err {
        ConfigError::InvalidValue { key, message, .. } => {
            assert_eq!(key, "postgres.pool_size");
            assert!(message.contains("invalid type"), "{message}");
            assert!(message.contains("\"lots\""), "{message}");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(file_line(&err), Some(3));
}

#[test]
fn out_of_range_value_in_file() {
    let file = write_file("[postgres]\n\npool_size = 70000\n");
    let err = load_err(Some(file.path()), &[]);
    assert_eq!(file_line(&err), Some(3), "{err}");
    assert!(err.to_string().contains("`postgres.pool_size`"), "{err}");
}

#[test]
fn wrong_type_in_env_names_variable() {
    let err = load_err(None, &[("VIGIE__KAFKA__LINGER_MS", "abc")]);
    assert_eq!(
        err.to_string(),
        "environment variable VIGIE__KAFKA__LINGER_MS: invalid value for `kafka.linger_ms`: \
         invalid type: found string \"abc\", expected u64"
    );
}

#[test]
fn unknown_key_in_env_names_variable() {
    let err = load_err(None, &[("VIGIE__KAFKA__BATCH_SISE", "1")]);
    match &err {
        ConfigError::UnknownKey { origin, key, .. } => {
            assert_eq!(key, "kafka.batch_sise");
            assert_eq!(
                origin,
                &Some(Origin::Env {
                    var: "VIGIE__KAFKA__BATCH_SISE".into()
                })
            );
        }
        other => panic!("unexpected error: {other:?}"),
    }
}

#[test]
fn missing_key_names_key_and_variable() {
    let err = Loader::new("[kafka]\nbrokers = \"k\"\n")
        .env_vars(no_env())
        .load::<Config>()
        .unwrap_err();
    match &err {
        ConfigError::MissingKey { key, env_var } => {
            assert_eq!(key, "kafka.batch_size");
            assert_eq!(env_var, "VIGIE__KAFKA__BATCH_SIZE");
        }
        other => panic!("unexpected error: {other:?}"),
    }
}

#[test]
fn bad_defaults_are_reported_with_line() {
    let err = Loader::new("[kafka]\nbrokers = \"k\"\nbogus = 1\n")
        .env_vars(no_env())
        .load::<Config>()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "embedded defaults, line 3: unknown key `kafka.bogus` (expected one of: \
         brokers, batch_size, linger_ms, compression, sasl_password, tls)"
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let file = write_file("[kafka]\nbrokers = \"k\"\nbatch_size = = 3\n");
    let err = load_err(Some(file.path()), &[]);
    match &err {
        ConfigError::Syntax { origin, column, .. } => {
            assert_eq!(
                origin,
                &Origin::File {
                    path: file.path().to_path_buf(),
                    line: Some(3)
                }
            );
            assert_eq!(*column, Some(14));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "config file {}, line 3, column 14: TOML syntax error",
            file.path().display()
        )),
        "{msg}"
    );
}

#[test]
fn missing_file_names_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load_err(Some(&path), &[]);
    assert!(matches!(&err, ConfigError::ReadFile { path: p, .. } if *p == path));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn secret_in_file_is_refused() {
    let file = write_file(
        "[kafka]\n\
         brokers = \"k:9092\"\n\
         \n\
         [postgres]\n\
         url = \"postgres://db/vigie\"\n\
         password = \"hunter2\"\n",
    );
    let err = load_err(Some(file.path()), &[]);
    match &err {
        ConfigError::SecretInFile { key, env_var, .. } => {
            assert_eq!(key, "postgres.password");
            assert_eq!(env_var, "VIGIE__POSTGRES__PASSWORD");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(file_line(&err), Some(6));
    let msg = err.to_string();
    assert!(msg.contains("VIGIE__POSTGRES__PASSWORD"), "{msg}");
    assert!(msg.contains("`postgres.password_file`"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn secret_from_env_is_accepted_and_redacted() {
    let config = load(
        None,
        &[
            ("VIGIE__POSTGRES__PASSWORD", "0123"),
            ("VIGIE__KAFKA__SASL_PASSWORD", "s3cr=t,[x]"),
        ],
    )
    .unwrap();
    // Kept verbatim: not parsed as the number 123 nor as an array.
    assert_eq!(config.postgres.password.as_ref().unwrap().expose(), "0123");
    assert_eq!(
        config.kafka.sasl_password.as_ref().unwrap().expose(),
        "s3cr=t,[x]"
    );

    let rendered = redacted_toml(&config).unwrap();
    assert!(rendered.contains("password = \"***\""), "{rendered}");
    assert!(rendered.contains("sasl_password = \"***\""), "{rendered}");
    assert!(!rendered.contains("0123"), "{rendered}");
    assert!(
        rendered.contains("brokers = \"localhost:9092\""),
        "{rendered}"
    );

    let debug = format!("{config:?}");
    assert!(debug.contains("Secret(***)"), "{debug}");
    assert!(
        !debug.contains("0123") && !debug.contains("s3cr"),
        "{debug}"
    );
}

#[test]
fn secret_file_convention() {
    let dir = TempDir::new().unwrap();
    let secret_path = dir.path().join("pg-password");
    std::fs::write(&secret_path, "from-file\n").unwrap();
    let secret = secret_path.to_str().unwrap();

    // From the environment.
    let config = load(None, &[("VIGIE__POSTGRES__PASSWORD_FILE", secret)]).unwrap();
    assert_eq!(config.postgres.password.unwrap().expose(), "from-file");

    // From the config file, relative to the file's directory.
    let config_path = dir.path().join("vigie.toml");
    std::fs::write(
        &config_path,
        "[postgres]\npassword_file = \"pg-password\"\n",
    )
    .unwrap();
    let config = load(Some(&config_path), &[]).unwrap();
    assert_eq!(config.postgres.password.unwrap().expose(), "from-file");

    // The environment's value wins over the file's `_file`.
    let config = load(
        Some(&config_path),
        &[("VIGIE__POSTGRES__PASSWORD", "from-env")],
    )
    .unwrap();
    assert_eq!(config.postgres.password.unwrap().expose(), "from-env");
}

#[test]
fn unreadable_secret_file_names_key_and_path() {
    let dir = TempDir::new().unwrap();
    let config_path = dir.path().join("vigie.toml");
    std::fs::write(
        &config_path,
        "[kafka]\nbrokers = \"k\"\nsasl_password_file = \"missing\"\n",
    )
    .unwrap();
    let err = load_err(Some(&config_path), &[]);
    let expected_path: PathBuf = dir.path().join("missing");
    match &err {
        ConfigError::SecretFile {
            origin, key, path, ..
        } => {
            assert_eq!(key, "kafka.sasl_password_file");
            assert_eq!(path, &expected_path);
            assert_eq!(
                origin,
                &Origin::File {
                    path: config_path.clone(),
                    line: Some(3)
                }
            );
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&expected_path.display().to_string())
    );
}

#[test]
fn secret_and_its_file_in_one_layer_is_an_error() {
    let err = load_err(
        None,
        &[
            ("VIGIE__POSTGRES__PASSWORD", "a"),
            ("VIGIE__POSTGRES__PASSWORD_FILE", "/nonexistent"),
        ],
    );
    assert!(
        matches!(&err, ConfigError::DuplicateKey { key, .. } if key == "postgres.password"),
        "{err:?}"
    );
}

#[test]
fn kebab_case_keys_are_accepted() {
    let file = write_file(
        "[kafka]\n\
         batch-size = 500\n\
         linger-ms = 20\n\
         [postgres]\n\
         pool-size = 8\n",
    );
    let config = load(Some(file.path()), &[]).unwrap();
    assert_eq!(config.kafka.batch_size, 500);
    assert_eq!(config.kafka.linger_ms, 20);
    assert_eq!(config.postgres.pool_size, 8);
}

#[test]
fn kebab_and_snake_for_one_key_is_an_error() {
    let file = write_file("[kafka]\nbatch-size = 500\nbatch_size = 20\n");
    let err = load_err(Some(file.path()), &[]);
    match &err {
        ConfigError::DuplicateKey { origin, key, other } => {
            assert_eq!(key, "kafka.batch_size");
            let lines: Vec<Option<usize>> = [origin, other]
                .iter()
                .map(|o| match o {
                    Origin::File { line, .. } => *line,
                    _ => None,
                })
                .collect();
            assert!(
                lines.contains(&Some(2)) && lines.contains(&Some(3)),
                "{err}"
            );
        }
        other => panic!("unexpected error: {other:?}"),
    }
}

#[test]
fn conflicting_env_vars_are_an_error() {
    let err = load_err(
        None,
        &[("VIGIE__KAFKA", "x"), ("VIGIE__KAFKA__BROKERS", "k:9092")],
    );
    let msg = err.to_string();
    assert!(msg.contains("VIGIE__KAFKA__BROKERS"), "{msg}");
    assert!(
        msg.contains("by environment variable VIGIE__KAFKA)"),
        "{msg}"
    );
}

#[test]
fn empty_env_segment_is_an_error() {
    let err = load_err(None, &[("VIGIE__KAFKA____BROKERS", "x")]);
    assert!(
        matches!(&err, ConfigError::InvalidEnv { var, .. } if var == "VIGIE__KAFKA____BROKERS"),
        "{err:?}"
    );
}

#[test]
fn secret_debug_and_serialize() {
    let secret = Secret::new("pw");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
    let parsed: Secret = serde_json::from_str("\"pw\"").unwrap();
    assert_eq!(parsed.expose(), "pw");
}

#[test]
fn loader_debug_hides_env_values() {
    let loader = Loader::new("").env_vars([("VIGIE__POSTGRES__PASSWORD", "hunter2")]);
    let debug = format!("{loader:?}");
    assert!(debug.contains("VIGIE__POSTGRES__PASSWORD"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn figment_exposes_merged_layers() {
    let figment = loader(None, &[("VIGIE__KAFKA__BATCH_SIZE", "3")])
        .figment()
        .unwrap();
    let batch: u32 = figment.extract_inner("kafka.batch_size").unwrap();
    assert_eq!(batch, 3);
}
