//! `RUN --mount=...` specifications, parsed as BuildKit's `parseMount` does.
//!
//! A spec is a CSV record of `key=value` fields. At parse time BuildKit checks only the CSV
//! syntax and that `from` uses no variable; the solver expands each value with the stage's
//! environment and then calls [`RunMount::parse`] with an expander for the full validation.

use std::fmt;

use crate::gocompat::{parse_bool, parse_u32};
use crate::units::ram_in_bytes;

/// Why a mount specification was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MountError(pub String);

/// The kind of a RUN mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MountType {
    /// A read-only (by default) bind of the context or another stage/image.
    #[default]
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file or environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    /// The keyword (`bind`, `cache`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheSharing {
    /// Concurrent writers share the directory.
    Shared,
    /// Each writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A validated RUN mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunMount {
    /// `type=` (bind when absent).
    pub kind: MountType,
    /// `from=`: stage or image to mount from.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// Read-only (default true for bind, secret and ssh; false for cache and tmpfs).
    pub readonly: bool,
    /// `id=` (cache id or secret/ssh id).
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: Option<CacheSharing>,
    /// `required` for secret and ssh mounts.
    pub required: bool,
    /// `size=` for tmpfs, in bytes.
    pub size: Option<i64>,
    /// `mode=` (octal) for cache, secret and ssh.
    pub mode: Option<u32>,
    /// `uid=` for cache, secret and ssh.
    pub uid: Option<u32>,
    /// `gid=` for cache, secret and ssh.
    pub gid: Option<u32>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
}

/// Splits one CSV record as Go's CSV reader does (`"` quoting with `""` escapes).
fn csv_fields(s: &str) -> Result<Vec<String>, MountError> {
    let line = s.split(['\n']).next().unwrap_or("").trim_end_matches('\r');
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if let Some(q) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut it = q.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = it.next() {
                if c == '"' {
                    if let Some((_, '"')) = it.peek() {
                        it.next();
                        field.push('"');
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                field.push(c);
            }
            let Some(end) = end else {
                return Err(MountError(
                    "failed to parse csv mounts: extraneous or missing \" in quoted-field".into(),
                ));
            };
            fields.push(field);
            rest = &q[end..];
            if rest.is_empty() {
                break;
            }
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None => {
                    return Err(MountError(
                        "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                            .into(),
                    ))
                }
            }
        } else {
            let (field, more) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if field.contains('"') {
                return Err(MountError(
                    "failed to parse csv mounts: bare \" in non-quoted-field".into(),
                ));
            }
            fields.push(field.to_string());
            match more {
                Some(m) => rest = m,
                None => break,
            }
        }
    }
    Ok(fields)
}

/// Expands one mount value (the solver passes its shell-word expansion).
pub type MountExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, MountError>;

impl RunMount {
    /// BuildKit's parse-time check of a `--mount` value: CSV syntax, `key=value` fields and
    /// no variable in `from` (use an alias stage instead).
    pub fn check_syntax(spec: &str) -> Result<(), MountError> {
        for field in csv_fields(spec)? {
            if let Some((key, value)) = field.split_once('=') {
                if key.eq_ignore_ascii_case("from") {
                    if let Some(i) = value.find('$') {
                        if i != value.len() - 1 {
                            return Err(MountError(
                                "'from' doesn't support variable expansion, define alias stage instead"
                                    .into(),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses and validates a `--mount` value; each value goes through `expand` first (pass
    /// `&mut |v| Ok(v.to_string())` for literal values).
    pub fn parse(spec: &str, expand: MountExpander<'_>) -> Result<RunMount, MountError> {
        let mut m = RunMount::default();
        let mut ro_auto = true;
        let mut sharing_set = false;
        let invalid =
            |key: &str, value: &str| MountError(format!("invalid value for {key}: {value}"));
        for field in csv_fields(spec)? {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_lowercase(), v),
                None => {
                    let key = field.to_lowercase();
                    match key.as_str() {
                        "readonly" | "ro" => {
                            m.readonly = true;
                            ro_auto = false;
                        }
                        "readwrite" | "rw" => {
                            m.readonly = false;
                            ro_auto = false;
                        }
                        "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                            m.required = true;
                        }
                        "required" => {
                            return Err(MountError(format!(
                                "unexpected key '{key}' for mount type '{}'",
                                m.kind
                            )))
                        }
                        _ => {
                            return Err(MountError(format!(
                                "invalid field '{field}' must be a key=value pair"
                            )))
                        }
                    }
                    continue;
                }
            };
            let value = expand(value)?;
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            return Err(MountError(format!(
                                "unsupported mount type {value:?}: expected one of bind, cache, tmpfs, secret, ssh"
                            )))
                        }
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(MountError(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind
                        )));
                    }
                    m.required = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(MountError(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind
                        )));
                    }
                    m.size = Some(ram_in_bytes(&value).ok_or_else(|| invalid(&key, &value))?);
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    sharing_set = true;
                    m.sharing = Some(match value.to_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            return Err(MountError(format!(
                                "unsupported sharing value {value:?}: expected one of shared, private, locked"
                            )))
                        }
                    });
                }
                "mode" => {
                    m.mode = Some(parse_u32(&value, 8).ok_or_else(|| {
                        MountError(format!("invalid value {value} for mode"))
                    })?)
                }
                "uid" => {
                    m.uid = Some(parse_u32(&value, 10).ok_or_else(|| {
                        MountError(format!("invalid value {value} for uid"))
                    })?)
                }
                "gid" => {
                    m.gid = Some(parse_u32(&value, 10).ok_or_else(|| {
                        MountError(format!("invalid value {value} for gid"))
                    })?)
                }
                "env" => m.env = Some(value),
                _ => {
                    return Err(MountError(format!(
                        "unexpected key '{key}' in '{field}': expected one of type, from, source, target, readonly, id, sharing, required, size, mode, uid, gid, env"
                    )))
                }
            }
        }
        let file_info_allowed = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info_allowed {
            for (name, set) in [
                ("mode", m.mode.is_some()),
                ("uid", m.uid.is_some()),
                ("gid", m.gid.is_some()),
            ] {
                if set {
                    return Err(MountError(format!(
                        "{name} not allowed for \"{}\" type mounts",
                        m.kind
                    )));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            if m.from.as_deref().is_some_and(|f| !f.is_empty()) {
                return Err(MountError("secret mount should not have a from".into()));
            }
            if sharing_set {
                return Err(MountError("secret mount should not define sharing".into()));
            }
            let empty = |o: &Option<String>| o.as_deref().unwrap_or("").is_empty();
            if empty(&m.source) && empty(&m.target) && empty(&m.id) {
                return Err(MountError(
                    "invalid secret mount. one of source, target required".into(),
                ));
            }
            if !empty(&m.source) && !empty(&m.id) {
                return Err(MountError("both source and id can't be set".into()));
            }
        }
        if sharing_set && m.kind != MountType::Cache {
            return Err(MountError(format!(
                "invalid cache sharing set for {} mount",
                m.kind
            )));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<RunMount, MountError> {
        RunMount::parse(s, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn mounts() {
        let m = p("type=cache,target=/root/.cache,sharing=locked,mode=0755,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert!(!m.readonly);
        let m = p("target=/src,\"source=a,b\"").unwrap();
        assert_eq!(m.source.as_deref(), Some("a,b"));
        assert!(m.readonly);
        assert!(p("type=secret,id=x,required").unwrap().required);
        assert!(p("type=tmpfs,size=64m,target=/t").unwrap().size == Some(64 << 20));
        for bad in [
            "type=nfs",
            "required",
            "type=bind,mode=755",
            "type=secret",
            "type=secret,id=a,source=b",
            "type=bind,sharing=locked",
            "bogus=1",
            "target",
            "type=cache,uid=x",
            "a\"b=c",
            "\"unterminated",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(RunMount::check_syntax("type=bind,from=$STAGE").is_err());
        assert!(RunMount::check_syntax("type=bind,from=stage$").is_ok());
    }
}
