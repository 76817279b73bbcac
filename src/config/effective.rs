//! `proxy --check`: the effective configuration, as a TOML file would say it, each value
//! with where it came from. What `--check` prints is what the proxy would run with.

use std::fmt::Write;

use super::{ProxyArgs, Source};
use crate::proxy::Target;

/// The settings, one per line (`key = value  # source`), then the TLS rules.
pub fn effective(args: &ProxyArgs) -> String {
    let mut out = String::new();
    let width = args.values.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in &args.values {
        let source = args.sources.get(key).copied().unwrap_or(Source::Default);
        let shown = match (key.as_str(), value.as_str()) {
            (_, "") => "(not set)".to_owned(),
            ("proxy_protocol" | "accept_proxy_protocol", v) => {
                let items: Vec<String> = v.split(',').map(|i| format!("{i:?}")).collect();
                format!("[{}]", items.join(", "))
            }
            (_, v) if v.parse::<u64>().is_ok() || v == "true" || v == "false" => v.to_owned(),
            (_, v) => format!("{v:?}"),
        };
        // Unset settings and `config` itself are comments, so the output is a valid file.
        let comment = if value.is_empty() || key == "config" {
            "# "
        } else {
            ""
        };
        let line = format!("{comment}{key:width$} = {shown}");
        let _ = writeln!(out, "{line:<60} # {}", source.as_str());
    }
    for rule in &args.tls_routes {
        let _ = writeln!(out, "\n[[tls_route]]{:>47} # file", "");
        if let Some(sni) = &rule.sni {
            let _ = writeln!(out, "sni = {sni:?}");
        }
        if let Some(alpn) = &rule.alpn {
            let _ = writeln!(out, "alpn = {alpn:?}");
        }
        if let Target::Backend(backend) = &rule.backend {
            let _ = writeln!(out, "backend = \"{backend}\"");
        }
    }
    out
}
