//! Instruction flags (`--name=value`, `--name`), validated per instruction the way BuildKit's
//! `BFlags` does: unknown and duplicate flags, missing values and bad booleans are errors.

use crate::diagnostic::{suggest, Diagnostic};
use crate::span::{Spanned, Word};

/// What a flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--name`, `--name=true|false`.
    Bool,
    /// `--name=value`, at most once.
    Str,
    /// `--name=value`, any number of times.
    Strings,
}

/// Flag values of one instruction, after validation.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(&'static str, Word)>,
    bools: Vec<(&'static str, Spanned<bool>)>,
}

impl Flags {
    pub(crate) fn string(&self, name: &str) -> Option<Word> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<Word> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn bool(&self, name: &str) -> Option<Spanned<bool>> {
        self.bools
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Validates `raw` flags (BuildKit's raw `--name=value` strings) against `specs`, pushing one
/// diagnostic per bad flag.
pub(crate) fn parse_flags(
    instruction: &str,
    raw: &[Word],
    specs: &[(&'static str, Kind)],
    errors: &mut Vec<Diagnostic>,
) -> Flags {
    let mut out = Flags::default();
    let mut used: Vec<&'static str> = Vec::new();
    let expected = || {
        if specs.is_empty() {
            format!("{instruction} takes no flags")
        } else {
            let names: Vec<String> = specs.iter().map(|(n, _)| format!("--{n}")).collect();
            format!("expected one of {}", names.join(", "))
        }
    };
    for flag in raw {
        let Some(body) = flag.value.strip_prefix("--") else {
            errors.push(Diagnostic::new(
                flag.span,
                format!("arg should start with -- : {}", flag.value),
            ));
            continue;
        };
        if body.is_empty() {
            break;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(spec_name, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
            let mut d = Diagnostic::new(
                flag.span,
                format!("unknown flag --{name} for {instruction}: {}", expected()),
            );
            if let Some(s) = suggest(name, &names) {
                d = d.with_help(format!("did you mean --{s}?"));
            }
            errors.push(d);
            continue;
        };
        if kind != Kind::Strings && used.contains(&spec_name) {
            errors.push(Diagnostic::new(
                flag.span,
                format!("duplicate flag specified: --{name}: expected it at most once"),
            ));
            continue;
        }
        used.push(spec_name);
        match kind {
            Kind::Bool => {
                let v = match value {
                    None => Some(true),
                    Some("") => {
                        errors.push(Diagnostic::new(
                            flag.span,
                            format!("missing a value on flag --{name}: expected --{name}=true or --{name}=false"),
                        ));
                        continue;
                    }
                    Some(v) => match v.to_lowercase().as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    },
                };
                match v {
                    Some(b) => out.bools.push((spec_name, Spanned::new(b, flag.span))),
                    None => errors.push(Diagnostic::new(
                        flag.span,
                        format!(
                            "expecting boolean value for flag --{name}, not: {}: expected true or false",
                            value.unwrap_or_default()
                        ),
                    )),
                }
            }
            Kind::Str | Kind::Strings => match value {
                Some(v) => out
                    .values
                    .push((spec_name, Spanned::new(v.to_string(), flag.span))),
                None => errors.push(Diagnostic::new(
                    flag.span,
                    format!("missing a value on flag --{name}: expected --{name}=<value>"),
                )),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Span;

    fn w(s: &str) -> Word {
        Spanned::new(s.to_string(), Span::new(0, s.len()))
    }

    #[test]
    fn validates_like_bflags() {
        let specs = [
            ("from", Kind::Str),
            ("link", Kind::Bool),
            ("exclude", Kind::Strings),
        ];
        let mut errs = Vec::new();
        let f = parse_flags(
            "COPY",
            &[
                w("--from=a"),
                w("--link"),
                w("--exclude=x"),
                w("--exclude=y"),
            ],
            &specs,
            &mut errs,
        );
        assert!(errs.is_empty());
        assert_eq!(f.string("from").unwrap().value, "a");
        assert!(f.bool("link").unwrap().value);
        assert_eq!(f.strings("exclude").len(), 2);

        let one = |flags: &[&str]| {
            let mut errs = Vec::new();
            let raw: Vec<Word> = flags.iter().map(|f| w(f)).collect();
            parse_flags("COPY", &raw, &specs, &mut errs);
            errs
        };
        let e = one(&["--form=a"]);
        assert!(e[0]
            .message
            .starts_with("unknown flag --form for COPY: expected one of --from"));
        assert_eq!(e[0].help.as_deref(), Some("did you mean --from?"));
        let e = one(&["--link=maybe"]);
        assert!(e[0]
            .message
            .starts_with("expecting boolean value for flag --link, not: maybe"));
        assert!(one(&["--from"])[0]
            .message
            .starts_with("missing a value on flag --from"));
        assert!(one(&["--link="])[0]
            .message
            .starts_with("missing a value on flag --link"));
        let e = one(&["--from=a", "--from=b"]);
        assert!(e[0].message.starts_with("duplicate flag specified: --from"));
        assert!(one(&["--from=a", "--", "--bogus"]).is_empty());
    }
}
