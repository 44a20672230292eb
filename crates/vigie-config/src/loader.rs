//! The layered loader: embedded defaults, then the config file, then the
//! environment, then secrets read from `<key>_file` files.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::value::{Dict, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use crate::env::{self, EnvLayer};
use crate::error::{ConfigError, Origin};
use crate::toml_text::{self, TomlSource};
use crate::tree;

/// The environment variable prefix used unless [`Loader::env_prefix`] says
/// otherwise.
pub const DEFAULT_ENV_PREFIX: &str = "VIGIE__";

/// Separates nesting levels in environment variable names:
/// `VIGIE__KAFKA__BROKERS` is `kafka.brokers`.
pub const ENV_SEPARATOR: &str = "__";

/// Suffix of the key naming a file that holds a secret.
const FILE_SUFFIX: &str = "_file";

/// Loads a configuration from layers, each overriding the previous one:
///
/// 1. the defaults embedded in the program, as TOML text;
/// 2. the config file, if one is given (it must then exist);
/// 3. environment variables `VIGIE__SECTION__KEY` (keys lower-cased);
/// 4. secrets read from files named by `<secret key>_file` settings.
///
/// Keys in TOML text may be written in kebab-case: every `-` in a key is read
/// as `_` (`batch-size` is `batch_size`). This also applies to keys of
/// free-form maps, so map keys that must keep a `-` cannot be configured.
///
/// Tables merge key by key; any other value (including arrays) replaces the
/// previous layer's value whole.
///
/// Secret keys (see [`Loader::secret_keys`]) may not be set in the config
/// file, only in the environment, the defaults or through `<key>_file`.
#[derive(Clone)]
pub struct Loader {
    defaults: String,
    file: Option<PathBuf>,
    env_prefix: String,
    env: Option<Vec<(String, String)>>,
    secret_keys: Vec<Vec<String>>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Explicit variables may hold secrets: only their names are shown.
        let env_names: Option<Vec<&str>> = self
            .env
            .as_ref()
            .map(|vars| vars.iter().map(|(name, _)| name.as_str()).collect());
        f.debug_struct("Loader")
            .field("defaults_len", &self.defaults.len())
            .field("file", &self.file)
            .field("env_prefix", &self.env_prefix)
            .field("env_names", &env_names)
            .field("secret_keys", &self.secret_keys)
            .finish()
    }
}

impl Loader {
    /// A loader with the given embedded defaults (TOML text), no config file,
    /// the process environment with [`DEFAULT_ENV_PREFIX`], and no secret
    /// keys.
    pub fn new(defaults_toml: impl Into<String>) -> Self {
        Loader {
            defaults: defaults_toml.into(),
            file: None,
            env_prefix: DEFAULT_ENV_PREFIX.to_owned(),
            env: None,
            secret_keys: Vec::new(),
        }
    }

    /// Reads this TOML config file over the defaults. Loading fails if it
    /// does not exist.
    #[must_use]
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Uses another prefix for environment variables (default `VIGIE__`).
    /// Prefix matching ignores ASCII case.
    #[must_use]
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// Uses these variables instead of the process environment, so tests
    /// need not mutate global state. An empty list disables the layer.
    #[must_use]
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Declares the dotted keys that hold secrets, e.g. `postgres.password`.
    ///
    /// For each, the config file may not set the key itself, and a
    /// `<key>_file` setting (e.g. `postgres.password_file`) in any layer
    /// names a file whose content, less one trailing newline, becomes the
    /// value. A relative `_file` path set in the config file is relative to
    /// the config file's directory; elsewhere, to the working directory. If
    /// both the key and its `_file` are set, the later layer wins, and both
    /// in one layer is an error. Secret keys must be reachable through
    /// tables only (not inside arrays).
    #[must_use]
    pub fn secret_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.secret_keys
            .extend(keys.into_iter().map(|k| tree::split_dotted(k.as_ref())));
        self
    }

    /// Loads and deserialises the configuration.
    ///
    /// Errors name the dotted key, the layer that set it (file path and line,
    /// environment variable...) and what was wrong.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let resolved = self.resolve()?;
        resolved
            .figment
            .extract::<T>()
            .map_err(|e| resolved.map_error(e))
    }

    /// The merged layers as a [`Figment`], for callers that want figment's
    /// own API (e.g. extracting one section). Errors from it are figment's,
    /// without the line numbers that [`Loader::load`] adds.
    pub fn figment(&self) -> Result<Figment, ConfigError> {
        Ok(self.resolve()?.figment)
    }

    fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut layers = vec![Layer::toml(TomlSource::Defaults, self.defaults.clone())?];
        if let Some(path) = &self.file {
            let text = fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let layer = Layer::toml(TomlSource::File(path.clone()), text)?;
            self.refuse_secrets_in_file(&layer)?;
            layers.push(layer);
        }
        layers.push(self.env_layer()?);
        if let Some(secrets) = self.secret_file_layer(&mut layers)? {
            layers.push(secrets);
        }

        let figment = layers.iter().fold(Figment::new(), |figment, layer| {
            figment.merge(layer.provider(&self.env_prefix))
        });
        Ok(Resolved {
            layers,
            figment,
            env_prefix: self.env_prefix.clone(),
        })
    }

    fn env_layer(&self) -> Result<Layer, ConfigError> {
        let raw_keys: BTreeSet<Vec<String>> = self
            .secret_keys
            .iter()
            .flat_map(|key| [key.clone(), file_key(key)])
            .collect();
        let vars: Vec<(OsString, OsString)> = match &self.env {
            Some(vars) => vars
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            None => std::env::vars_os().collect(),
        };
        let env = env::collect(vars, &self.env_prefix, ENV_SEPARATOR, &raw_keys)?;
        Ok(Layer {
            dict: env.dict.clone(),
            kind: LayerKind::Env(env),
        })
    }

    fn refuse_secrets_in_file(&self, layer: &Layer) -> Result<(), ConfigError> {
        for key in &self.secret_keys {
            if tree::get(&layer.dict, key).is_some() {
                return Err(ConfigError::SecretInFile {
                    origin: layer.origin(key),
                    key: tree::render(key, |_| false),
                    env_var: env::var_name(&self.env_prefix, ENV_SEPARATOR, key),
                });
            }
        }
        Ok(())
    }

    /// Takes the `<key>_file` settings out of every layer, so that structs
    /// need not declare them, and reads the files whose setting wins.
    fn secret_file_layer(&self, layers: &mut [Layer]) -> Result<Option<Layer>, ConfigError> {
        let mut dict = Dict::new();
        let mut entries = Vec::new();
        for key in &self.secret_keys {
            let file_key = file_key(key);
            // (layer index, origin, value) of the latest `_file` setting.
            let mut file_setting: Option<(usize, Origin, Value)> = None;
            let mut direct: Option<usize> = None;
            for (i, layer) in layers.iter_mut().enumerate() {
                let origin = layer.origin(&file_key);
                if let Some(value) = tree::remove(&mut layer.dict, &file_key) {
                    if tree::get(&layer.dict, key).is_some() {
                        return Err(ConfigError::DuplicateKey {
                            origin: layer.origin(key),
                            key: tree::render(key, |_| false),
                            other: origin,
                        });
                    }
                    file_setting = Some((i, origin, value));
                } else if tree::get(&layer.dict, key).is_some() {
                    direct = Some(i);
                }
            }
            let Some((i, origin, value)) = file_setting else {
                continue;
            };
            if direct.is_some_and(|d| d > i) {
                continue;
            }
            let file_key_str = tree::render(&file_key, |_| false);
            let Value::String(_, raw_path) = value else {
                return Err(ConfigError::InvalidValue {
                    origin: Some(origin),
                    key: file_key_str,
                    message: "expected the path of a file holding the secret".to_owned(),
                });
            };
            let path = match &layers[i].kind {
                LayerKind::Toml {
                    source: TomlSource::File(config),
                    ..
                } => relative_to(config, Path::new(&raw_path)),
                _ => PathBuf::from(&raw_path),
            };
            let content = fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                origin,
                key: file_key_str.clone(),
                path: path.clone(),
                source,
            })?;
            let secret = strip_newline(&content).to_owned();
            // Cannot fail: each secret key is inserted once into a fresh
            // dictionary, unless two declared keys nest, which is tolerated
            // by keeping the first.
            let _ = tree::insert(&mut dict, key, Value::from(secret));
            entries.push(SecretFileEntry {
                key: key.clone(),
                file_key: file_key_str,
                path,
            });
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(Layer {
            dict,
            kind: LayerKind::SecretFiles(entries),
        }))
    }
}

fn file_key(key: &[String]) -> Vec<String> {
    let mut file_key = key.to_vec();
    if let Some(last) = file_key.last_mut() {
        last.push_str(FILE_SUFFIX);
    }
    file_key
}

fn relative_to(config: &Path, path: &Path) -> PathBuf {
    match config.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Secret files are usually written by `echo` or an editor, which add a
/// newline that is not part of the secret.
fn strip_newline(content: &str) -> &str {
    let content = content.strip_suffix('\n').unwrap_or(content);
    content.strip_suffix('\r').unwrap_or(content)
}

/// One layer's data and where it came from.
struct Layer {
    dict: Dict,
    kind: LayerKind,
}

enum LayerKind {
    Toml { source: TomlSource, text: String },
    Env(EnvLayer),
    SecretFiles(Vec<SecretFileEntry>),
}

struct SecretFileEntry {
    key: Vec<String>,
    file_key: String,
    path: PathBuf,
}

impl Layer {
    fn toml(source: TomlSource, text: String) -> Result<Layer, ConfigError> {
        let dict = toml_text::parse(&text, &source)?;
        Ok(Layer {
            dict,
            kind: LayerKind::Toml { source, text },
        })
    }

    /// Where in this layer the value at `path` (or its closest ancestor) is
    /// set.
    fn origin(&self, path: &[String]) -> Origin {
        match &self.kind {
            LayerKind::Toml { source, text } => source.origin(toml_text::find_line(text, path)),
            LayerKind::Env(env) => Origin::Env {
                var: env.var_for(path).unwrap_or_default().to_owned(),
            },
            LayerKind::SecretFiles(entries) => {
                let entry = entries
                    .iter()
                    .find(|e| path.starts_with(&e.key) || e.key.starts_with(path))
                    .or(entries.first());
                match entry {
                    Some(e) => Origin::SecretFile {
                        key: e.file_key.clone(),
                        path: e.path.clone(),
                    },
                    None => Origin::SecretFile {
                        key: String::new(),
                        path: PathBuf::new(),
                    },
                }
            }
        }
    }

    fn provider(&self, env_prefix: &str) -> LayerProvider {
        let metadata = match &self.kind {
            LayerKind::Toml {
                source: TomlSource::Defaults,
                ..
            } => Metadata::named("embedded defaults"),
            LayerKind::Toml {
                source: TomlSource::File(path),
                ..
            } => Metadata::from("config file", path.as_path()),
            LayerKind::Env(_) => {
                let prefix = env_prefix.to_owned();
                Metadata::named("environment variable").interpolater(
                    move |_: &Profile, keys: &[&str]| {
                        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                        env::var_name(&prefix, ENV_SEPARATOR, &keys)
                    },
                )
            }
            LayerKind::SecretFiles(_) => Metadata::named("secret file"),
        };
        LayerProvider {
            metadata,
            dict: self.dict.clone(),
        }
    }
}

struct LayerProvider {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for LayerProvider {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The layers of one load, kept to explain errors.
struct Resolved {
    layers: Vec<Layer>,
    figment: Figment,
    env_prefix: String,
}

impl Resolved {
    /// The origin of the layer whose value at `path` survives the merge.
    fn origin_of(&self, path: &[String]) -> Option<Origin> {
        self.layers
            .iter()
            .rev()
            .find(|layer| tree::defines(&layer.dict, path))
            .map(|layer| layer.origin(path))
    }

    fn render(&self, path: &[String]) -> String {
        tree::render(path, |prefix| {
            self.layers
                .iter()
                .any(|layer| matches!(tree::get(&layer.dict, prefix), Some(Value::Array(..))))
        })
    }

    fn map_error(&self, error: figment::Error) -> ConfigError {
        let mut path = error.path.clone();
        match error.kind {
            Kind::UnknownField(field, expected) => {
                // Figment already appends the unknown key to the path; older
                // versions did not.
                if path.last() != Some(&field) {
                    path.push(field);
                }
                ConfigError::UnknownKey {
                    origin: self.origin_of(&path),
                    key: self.render(&path),
                    expected: expected.iter().map(|s| (*s).to_owned()).collect(),
                }
            }
            Kind::MissingField(field) => {
                path.push(field.into_owned());
                ConfigError::MissingKey {
                    key: self.render(&path),
                    env_var: env::var_name(&self.env_prefix, ENV_SEPARATOR, &path),
                }
            }
            kind => ConfigError::InvalidValue {
                origin: if path.is_empty() {
                    None
                } else {
                    self.origin_of(&path)
                },
                key: self.render(&path),
                message: kind.to_string(),
            },
        }
    }
}
