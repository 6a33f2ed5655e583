//! The keys `config.toml` may hold, checked before serde so that *every* unknown key is
//! reported in one run (serde stops at the first).

use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Each table and the keys it takes. `rules` is an array of tables.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "admin_listen",
            "header_read_timeout",
            "max_connections",
            "max_url_length",
            "max_header_size",
            "idle_timeout",
            "shutdown_timeout",
        ],
    ),
    ("log", &["format", "level", "access_log"]),
    (
        "upstream",
        &[
            "url",
            "timeout",
            "connect_timeout",
            "max_fills",
            "queue_timeout",
        ],
    ),
    (
        "store",
        &[
            "kind",
            "url",
            "nodes",
            "memory_limit",
            "l1",
            "max_object_size",
            "timeout",
            "fill_lease",
        ],
    ),
    (
        "cache",
        &[
            "namespace",
            "ignore_params",
            "honor_client_no_cache",
            "strip_headers",
            "compress",
            "stale_if_unreachable",
        ],
    ),
    ("warm", &["urls", "requests", "every"]),
    ("purge", &["allow", "token"]),
    ("tracing", &["otlp_endpoint"]),
    (
        "rules",
        &[
            "path",
            "ttl",
            "stale_while_revalidate",
            "stale_if_error",
            "override_origin",
            "ignore_params",
            "key_headers",
            "tags",
            "cache",
            "ignore_cookies",
            "methods",
            "body_key",
            "ignore_body_fields",
            "round_params",
            "max_fills",
            "refresh_ahead",
        ],
    ),
];

/// Syntax errors, or every key that is not in the schema, with its span.
pub fn check(text: &str) -> Vec<(Option<Range<usize>>, String)> {
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => return vec![(e.span(), e.message().trim().to_string())],
    };
    let mut out = Vec::new();
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        let Some((_, keys)) = SCHEMA.iter().find(|(t, _)| *t == name) else {
            let tables: Vec<&str> = SCHEMA.iter().map(|(t, _)| *t).collect();
            out.push((
                Some(key.span()),
                format!("unknown table `{name}`, expected one of {tables:?}"),
            ));
            continue;
        };
        match value.get_ref() {
            DeValue::Table(t) => table(name, t, keys, &mut out),
            DeValue::Array(a) if name == "rules" => {
                for item in a.iter() {
                    if let DeValue::Table(t) = item.get_ref() {
                        table(name, t, keys, &mut out);
                    }
                }
            }
            _ => out.push((Some(value.span()), format!("`{name}` must be a table"))),
        }
    }
    out
}

fn table(
    name: &str,
    t: &DeTable<'_>,
    keys: &[&str],
    out: &mut Vec<(Option<Range<usize>>, String)>,
) {
    for (k, _) in t.iter() {
        let k: &Spanned<_> = k;
        let kn: &str = k.get_ref();
        if !keys.contains(&kn) {
            out.push((
                Some(k.span()),
                format!("unknown key `{kn}` in [{name}], expected one of {keys:?}"),
            ));
        }
    }
}
