//! The image config as the Dockerfile builds it, serialised the way docker/BuildKit write it.
//!
//! Field order and omission follow docker's image JSON (`architecture`, `config`, `created`,
//! `history`, `os`, `rootfs`; inside `config` docker's container-config order with empty fields
//! left out, `OnBuild` always present). History entries carry BuildKit's `created_by` strings and
//! `comment: buildkit.dockerfile.v0`; their times come from the build cache records of the steps
//! that made the layers and are filled in for empty-layer entries as BuildKit's exporter does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::VertexId;

/// Comment BuildKit puts on every history entry a Dockerfile adds.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Docker's health-check settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero")]
    pub retries: i64,
}

/// Reads `null` as the type's default: docker writes `"Env": null`, `"Labels": null`... in the
/// configs of imported and classic-built images, where an absent field means the same.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The `config` object of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Config {
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    pub on_build: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl Config {
    /// The value of `key` in `Env`.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// BuildKit's `addEnv`: replaces the first entry with that key in place, else appends.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        for e in self.env.iter_mut() {
            if e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key {
                *e = entry;
                return;
            }
        }
        self.env.push(entry);
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub empty_layer: bool,
}

/// A history entry being built: the base image's (with its time) or one of this build's
/// (whose layer, if any, is made by `step`).
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub entry: History,
    /// The vertex whose result carries this entry's layer time.
    pub step: Option<VertexId>,
}

/// The subset of a config file the build reads and writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageFile {
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub config: Config,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub history: Vec<History>,
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// Fills the `created` of entries that have none the way BuildKit's exporter does: entries
/// before the first new layer take that layer's time, later ones the previous layer's.
pub fn fill_created(history: &mut [History]) {
    let mut created: Option<String> = None;
    let mut seen_none = false;
    for h in history.iter() {
        match &h.created {
            Some(c) => {
                created = Some(c.clone());
                if seen_none {
                    break;
                }
            }
            None => seen_none = true,
        }
    }
    seen_none = false;
    for h in history.iter_mut() {
        match &h.created {
            Some(c) => {
                if seen_none {
                    created = Some(c.clone());
                }
            }
            None => {
                seen_none = true;
                h.created = created.clone();
            }
        }
    }
}

/// Go's `%q` of a string slice: `["a" "b c"]`.
pub fn go_quote_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| lade_parser::go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// Go's `%v` of a string slice: `[a b c]`.
pub fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `%q` of a `time.Duration` (its `String()` quoted), as docker 20.10's BuildKit writes
/// durations into a HEALTHCHECK history entry.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        let whole = u / div;
        let frac = u % div;
        out.push_str(&whole.to_string());
        if frac > 0 {
            let digits = format!("{:0width$}", frac, width = div.to_string().len() - 1);
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        u %= 3_600_000_000_000;
        let m = u / 60_000_000_000;
        u %= 60_000_000_000;
        let s = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&s.to_string());
        if frac > 0 {
            out.push('.');
            out.push_str(format!("{frac:09}").trim_end_matches('0'));
        }
        out.push('s');
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

/// Go's `%q` of an int: a quoted character literal (`'\x03'`), as docker 20.10's BuildKit
/// writes HEALTHCHECK retries (it formats the whole struct with `%q`).
pub fn go_quote_rune(n: i64) -> String {
    match u32::try_from(n).ok().and_then(char::from_u32) {
        Some(c) if (' '..='~').contains(&c) && c != '\'' && c != '\\' => format!("'{c}'"),
        Some('\'') => "'\\''".into(),
        Some('\\') => "'\\\\'".into(),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        Some(c) if (c as u32) < 0x10000 => format!("'\\u{:04x}'", c as u32),
        Some(c) => format!("'\\U{:08x}'", c as u32),
        None => "'\\ufffd'".into(),
    }
}

/// RFC 3339 with nanoseconds in UTC, like Go's `time.Time` JSON.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (h, m, s) = (tod / 3600, (tod % 3600) / 60, tod % 60);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_642_573, 109_498_009),
            "2026-11-25T21:36:13.109498009Z"
        );
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(
            go_quote_list(&["x".into(), "y z".into()]),
            "[\"x\" \"y z\"]"
        );
        let mut c = Config::default();
        c.env_set("A", "1");
        c.env_set("B", "2");
        c.env_set("A", "3");
        assert_eq!(c.env, ["A=3", "B=2"]);
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"{"Env":["A=3","B=2"],"OnBuild":null}"#);
    }

    #[test]
    fn config_keys_are_dockers() {
        let c = Config {
            user: "u".into(),
            exposed_ports: [("80/tcp".to_string(), serde_json::json!({}))].into(),
            env: vec!["A=1".into()],
            entrypoint: Some(vec!["e".into()]),
            cmd: Some(vec!["c".into()]),
            volumes: [("/v".to_string(), serde_json::json!({}))].into(),
            working_dir: "/w".into(),
            labels: [("l".to_string(), "v".to_string())].into(),
            stop_signal: "SIGTERM".into(),
            healthcheck: Some(Healthcheck {
                test: vec!["CMD".into()],
                interval: 1,
                timeout: 2,
                start_period: 3,
                start_interval: 4,
                retries: 5,
            }),
            args_escaped: true,
            on_build: None,
            shell: Some(vec!["sh".into()]),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(
            j,
            r#"{"User":"u","ExposedPorts":{"80/tcp":{}},"Env":["A=1"],"Entrypoint":["e"],"Cmd":["c"],"Volumes":{"/v":{}},"WorkingDir":"/w","Labels":{"l":"v"},"StopSignal":"SIGTERM","Healthcheck":{"Test":["CMD"],"Interval":1,"Timeout":2,"StartPeriod":3,"StartInterval":4,"Retries":5},"ArgsEscaped":true,"OnBuild":null,"Shell":["sh"]}"#
        );
        assert_eq!(serde_json::from_str::<Config>(&j).unwrap(), c);
        assert_eq!(
            serde_json::from_str::<Config>("{}").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn reads_docker_import_configs_with_nulls() {
        // `docker import` (dockerd 20.10): every empty config field is `null`
        let j = r#"{"architecture":"amd64","comment":"Imported from -","config":{"Hostname":"",
            "User":"","Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"",
            "Entrypoint":null,"OnBuild":null,"Labels":null,"ExposedPorts":null},
            "created":"2026-11-25T23:05:48.047284457Z","docker_version":"20.10.24",
            "history":[{"created":"2026-11-25T23:05:48.047284457Z","comment":"Imported from -"}],
            "os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:91dc"]}}"#;
        let f: ImageFile = serde_json::from_str(j).unwrap();
        assert!(f.config.env.is_empty() && f.config.labels.is_empty());
        assert_eq!(f.history.len(), 1);
        assert_eq!(f.history[0].comment.as_deref(), Some("Imported from -"));
        assert_eq!(f.rootfs.diff_ids, ["sha256:91dc"]);
    }

    #[test]
    fn created_filled_like_buildkit() {
        let h = |c: Option<&str>| History {
            created: c.map(String::from),
            ..Default::default()
        };
        let mut v = vec![
            h(Some("base")),
            h(None),
            h(Some("l1")),
            h(None),
            h(Some("l2")),
            h(None),
        ];
        fill_created(&mut v);
        let got: Vec<_> = v.iter().map(|x| x.created.clone().unwrap()).collect();
        assert_eq!(got, ["base", "l1", "l1", "l1", "l2", "l2"]);
    }
}
