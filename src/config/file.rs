//! The `--config` TOML file: read with care (a regular file, at most [`MAX_FILE_BYTES`]),
//! checked key by key, and turned into the flags it stands for so that one set of parsers
//! validates every source.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use super::ConfigError;
use crate::proxy::{Target, TlsRule};

/// A config file larger than this is refused: it is a mistake, not a configuration.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What a file holds: settings by flag name, and the TLS rules only a file can give.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub settings: BTreeMap<String, toml::Value>,
    pub tls_routes: Vec<TlsRule>,
}

/// Reads and checks `path`. Blocking: the reloader calls it off the runtime.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = read(path).map_err(|message| ConfigError::Read {
        path: path.to_owned(),
        message,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        parse_error(path, &text, at, e.message())
    })?;
    let known = super::setting_ids();
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let tls_routes = match table.remove("tls_route") {
        Some(rules) => tls_rules(rules).map_err(|m| invalid("tls_route", m))?,
        None => Vec::new(),
    };
    for key in table.keys() {
        if key == "config" || !known.contains(key) {
            let at = text.find(key.as_str()).unwrap_or(0);
            return Err(parse_error(
                path,
                &text,
                at,
                &format!("unknown key `{key}`"),
            ));
        }
    }
    Ok(FileConfig {
        settings: table.into_iter().collect(),
        tls_routes,
    })
}

fn read(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking open: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // A FIFO or device would block or never end: only a regular file is a config file.
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// One line per error, naming the file, line and text: it ends up in a log line.
fn parse_error(path: &Path, text: &str, at: usize, message: &str) -> ConfigError {
    let line = text[..at.min(text.len())].matches('\n').count() + 1;
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        text: text
            .lines()
            .nth(line - 1)
            .unwrap_or_default()
            .trim()
            .chars()
            .take(120)
            .collect(),
        message: message.to_owned(),
    }
}

/// The command-line arguments that `key = value` stands for, checked by the flag's own
/// parser: an error names the file and the key.
pub fn to_args(
    cmd: &clap::Command,
    path: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<OsString>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let flag = format!("--{}", key.replace('_', "-"));
    let args: Vec<OsString> = match value {
        toml::Value::Boolean(true) => vec![flag.into()],
        toml::Value::Boolean(false) => vec![],
        toml::Value::String(s) => vec![flag.into(), s.into()],
        toml::Value::Integer(i) => vec![flag.into(), i.to_string().into()],
        toml::Value::Array(items) => {
            let items = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or("a list of strings"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| invalid(format!("must be {m}")))?;
            vec![flag.into(), items.join(",").into()]
        }
        other => return Err(invalid(format!("unexpected {}", other.type_str()))),
    };
    let alone = std::iter::once(OsString::from("proxy")).chain(args.iter().cloned());
    if let Err(e) = cmd.clone().try_get_matches_from(alone) {
        let rendered = e.to_string();
        let first = rendered.lines().next().unwrap_or_default();
        return Err(invalid(first.trim_start_matches("error: ").to_owned()));
    }
    Ok(args)
}

/// `[[tls_route]]` tables: `backend` required, `sni` (a host name or `*.domain`) and `alpn`
/// optional.
fn tls_rules(value: toml::Value) -> Result<Vec<TlsRule>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        sni: Option<String>,
        alpn: Option<String>,
        backend: String,
    }
    let rules: Vec<Rule> = value
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    rules
        .into_iter()
        .map(|r| {
            if let Some(sni) = &r.sni {
                check_sni_pattern(sni)?;
            }
            Ok(TlsRule {
                sni: r.sni.map(|s| s.to_ascii_lowercase()),
                alpn: r.alpn,
                backend: Target::Backend(r.backend.parse()?),
            })
        })
        .collect()
}

/// A host name (`api.example.com`) or a wildcard for the names under a domain
/// (`*.example.com`); `*` alone, or a `*` anywhere else, matches nothing and is refused.
pub fn check_sni_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "sni `{pattern}` is neither a host name nor `*.domain`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_sni_pattern;

    #[test]
    fn sni_patterns_are_host_names_or_wildcard_domains() {
        for ok in ["api.example.com", "*.example.com", "localhost", "a-b.c"] {
            assert!(check_sni_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*",
            "",
            "*.",
            "a..b",
            "-a.b",
            "a*.b",
            "exa mple.com",
            "*.*.com",
        ] {
            assert!(check_sni_pattern(bad).is_err(), "{bad}");
        }
    }
}
