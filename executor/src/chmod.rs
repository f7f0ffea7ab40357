//! `COPY/ADD --chmod`: an octal mode or a symbolic one in chmod(1) syntax (`u+x,g-w`,
//! `go=u-w`, `a+rX`), applied to each copied entry.
//!
//! BuildKit (Dockerfile frontend 1.14+, moby/buildkit#5734) accepts both: a value that parses as
//! octal (at most `07777`) replaces the permission bits; anything else goes through BSD's
//! `setmode(3)` rules (its `tonistiigi/dchapes-mode` port, as fsutil's copier applies it), here
//! re-implemented:
//! - the umask is 0: a clause without `who` (`+x`, `=rw`) affects user, group and other;
//! - `a` is `ugo` with the set-id bits, `u`/`g` include set-uid/set-gid, `t` (sticky) only counts
//!   when the clause names more than `o`, `s` likewise;
//! - the change is relative to each entry's own mode; `X` sets the execute bits with `+` and `=`
//!   only for a directory or an entry that had some execute bit before the change (the
//!   POSIX.1-2024 / Linux reading, moby/buildkit#5835), and clears them unconditionally with `-`;
//! - `u`, `g`, `o` after the operator copy that class's bits as they are at that point
//!   (`g=u`, `go=u-w`); several operators may follow one `who` (`u=rw,go=u-w`, `-x+X`).

use std::fmt;

/// Set-uid, set-gid and the rwx bits of all three classes (`a`).
const STANDARD: u32 = 0o6777;
const STICKY: u32 = 0o1000;
const SETID: u32 = 0o6000;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;
const OTHER: u32 = 0o007;

/// One step of a symbolic mode, applied in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Set(u32),
    Clear(u32),
    /// Set these bits if the entry is a directory or had an execute bit (`X`).
    SetIfExec(u32),
    /// Copy class `from` (0 = other, 1 = group, 2 = user: the shift is `3 * from`) into the
    /// classes of `to` (a mask over 0o700/0o070/0o007), with `op`.
    Copy {
        from: u32,
        to: u32,
        op: u8,
    },
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    /// As written (it names the value in cache keys and messages).
    text: String,
    /// `Some` for an octal value: the permission bits to set.
    octal: Option<u32>,
    steps: Vec<Step>,
}

/// Why a `--chmod` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodError(String);

impl fmt::Display for ChmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChmodError {}

impl Chmod {
    /// Parses a `--chmod` value with BuildKit's rules (`dispatchCopy`): octal first, then
    /// symbolic. A value starting with a digit is octal or an error.
    pub fn parse(s: &str) -> Result<Chmod, ChmodError> {
        let octal_err = || {
            ChmodError(format!(
                "invalid chmod parameter '{s}': it should be an octal string between 0 and 07777 \
                 or a symbolic mode such as u+x,g-w"
            ))
        };
        if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let v = u32::from_str_radix(s, 8).map_err(|_| octal_err())?;
            if v > 0o7777 {
                return Err(octal_err());
            }
            return Ok(Chmod {
                text: s.to_string(),
                octal: Some(v),
                steps: Vec::new(),
            });
        }
        let steps = parse_symbolic(s).ok_or_else(|| {
            ChmodError(format!(
                "invalid chmod parameter '{s}': not an octal mode and not a symbolic mode in \
                 chmod(1) syntax such as u+x,g-w or u=rwX,go=rX"
            ))
        })?;
        Ok(Chmod {
            text: s.to_string(),
            octal: None,
            steps,
        })
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The octal value, when the mode is octal.
    pub fn octal(&self) -> Option<u32> {
        self.octal
    }

    /// The permission bits (`07777`) of an entry whose mode was `mode` after the change;
    /// `is_dir` decides `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        if let Some(v) = self.octal {
            return v;
        }
        let old = mode & 0o7777;
        let mut m = old;
        for step in &self.steps {
            match *step {
                Step::Set(b) => m |= b,
                Step::Clear(b) => m &= !b,
                Step::SetIfExec(b) => {
                    if is_dir || old & EXEC != 0 {
                        m |= b;
                    }
                }
                Step::Copy { from, to, op } => {
                    let value = (m >> (3 * from)) & 0o7;
                    let spread = (value * 0o111) & to;
                    match op {
                        b'+' => m |= spread,
                        b'-' => m &= !spread,
                        _ => m = (m & !to) | spread,
                    }
                }
            }
        }
        m
    }
}

/// Parses a symbolic mode into steps, or `None` when it is not one.
fn parse_symbolic(s: &str) -> Option<Vec<Step>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut steps = Vec::new();
    loop {
        // who
        let mut who = 0u32;
        loop {
            match b.get(i)? {
                b'a' => who |= STANDARD,
                b'u' => who |= 0o4700,
                b'g' => who |= 0o2070,
                b'o' => who |= OTHER,
                _ => break,
            }
            i += 1;
        }
        // one or more `op perms`
        loop {
            let op = *b.get(i)?;
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut who = who;
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            let mut assigned = false;
            loop {
                let c = b.get(i).copied();
                match c {
                    Some(b'r') => perm |= READ,
                    Some(b'w') => perm |= WRITE,
                    Some(b'x') => perm |= EXEC,
                    Some(b'X') if op == b'-' => perm |= EXEC,
                    Some(b'X') => perm_x = EXEC,
                    Some(b's') if who == 0 || who & !OTHER != 0 => perm |= SETID,
                    Some(b't') if who == 0 || who & !OTHER != 0 => {
                        who |= STICKY;
                        perm |= STICKY;
                    }
                    Some(b's' | b't') => {}
                    Some(from @ (b'u' | b'g' | b'o')) => {
                        if perm != 0 {
                            push(&mut steps, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            assigned = true;
                        }
                        if perm_x != 0 {
                            steps.push(Step::SetIfExec(masked(who, perm_x)));
                            perm_x = 0;
                        }
                        let from = match from {
                            b'u' => 2,
                            b'g' => 1,
                            _ => 0,
                        };
                        let to = if who == 0 {
                            0o777
                        } else {
                            (if who & 0o400 != 0 { 0o700 } else { 0 })
                                | (if who & 0o040 != 0 { 0o070 } else { 0 })
                                | (if who & 0o004 != 0 { 0o007 } else { 0 })
                        };
                        steps.push(Step::Copy { from, to, op });
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !assigned) {
                            push(&mut steps, op, who, perm);
                        }
                        if perm_x != 0 {
                            steps.push(Step::SetIfExec(masked(who, perm_x)));
                        }
                        break;
                    }
                }
                i += 1;
            }
            match b.get(i) {
                None => return Some(steps),
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

/// The bits of `perm` that `who` selects (all of them when `who` is empty: umask 0).
fn masked(who: u32, perm: u32) -> u32 {
    if who == 0 {
        perm
    } else {
        who & perm
    }
}

fn push(steps: &mut Vec<Step>, op: u8, who: u32, perm: u32) {
    match op {
        b'+' => steps.push(Step::Set(masked(who, perm))),
        b'-' => steps.push(Step::Clear(masked(who, perm))),
        _ => {
            steps.push(Step::Clear(if who == 0 { STANDARD } else { who }));
            steps.push(Step::Set(masked(who, perm)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &str, mode: u32) -> u32 {
        Chmod::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .apply(mode, false)
    }

    fn apply_dir(s: &str, mode: u32) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, true)
    }

    #[test]
    fn octal_replaces_the_permission_bits() {
        assert_eq!(apply("644", 0o777), 0o644);
        assert_eq!(apply("0755", 0o600), 0o755);
        assert_eq!(apply("4750", 0o644), 0o4750);
        assert_eq!(apply("0", 0o777), 0);
        assert_eq!(Chmod::parse("0644").unwrap().octal(), Some(0o644));
        assert_eq!(Chmod::parse("u+x").unwrap().octal(), None);
    }

    #[test]
    fn bad_values_are_refused() {
        for s in [
            "", "17777", "9", "8", "0o755", "z", "u", "go", ",", "u+x,", "q+r", "+q", "u+x;",
            "+755",
        ] {
            assert!(Chmod::parse(s).is_err(), "{s:?} accepted");
        }
        let e = Chmod::parse("17777").unwrap_err().to_string();
        assert!(e.contains("'17777'") && e.contains("07777"), "{e}");
        let e = Chmod::parse("u+q").unwrap_err().to_string();
        assert!(e.contains("'u+q'") && e.contains("symbolic"), "{e}");
    }

    /// Vectors of the setmode(3) port BuildKit uses (umask 0).
    #[test]
    fn symbolic_like_setmode() {
        let cases: &[(u32, u32, &str)] = &[
            (0o777, 0o000, "="),
            (0o777, 0o777, "+"),
            (0o421, 0o421, "-"),
            (0o421, 0o1421, "+t"),
            (0o1421, 0o421, "-t"),
            (0o000, 0o400, "u+r"),
            (0o000, 0o100, "u+x"),
            (0o000, 0o000, "u+X"),
            (0o001, 0o101, "u+X"),
            (0o000, 0o4000, "u+s"),
            (0o000, 0o2000, "g+s"),
            (0o000, 0o000, "o+s"),
            (0o100, 0o110, "g+X"),
            (0o000, 0o444, "+r"),
            (0o000, 0o111, "+x"),
            (0o010, 0o111, "+X"),
            (0o000, 0o6000, "+s"),
            (0o777, 0o333, "-r"),
            (0o777, 0o666, "-x"),
            (0o6777, 0o777, "-s"),
            (0o777, 0o677, "u-x"),
            (0o4777, 0o777, "u-s"),
            (0o000, 0o600, "u=rw"),
            (0o777, 0o677, "u=rw"),
            (0o777, 0o077, "u="),
            (0o777, 0o666, "=rw"),
            (0o042, 0o442, "u=g"),
            (0o742, 0o442, "u=g"),
            (0o722, 0o022, "u=g-w"),
            (0o762, 0o462, "u=g-w"),
            (0o772, 0o572, "u=g-w"),
            (0o021, 0o121, "u+o"),
            (0o021, 0o221, "u+g"),
            (0o021, 0o321, "u+go"),
            (0o011, 0o111, "u+uo"),
            (0o111, 0o000, "-u"),
            (0o000, 0o764, "a=r,ug=rw,u+x"),
            (0o777, 0o764, "a=r,ug=rw,u+x"),
            (0o000, 0o1624, "o+r,g+w,a+t,g-s,u+og"),
            (0o2100, 0o1724, "o+r,g+w,a+t,g-s,u+og"),
            (0o777, 0o644, "644"),
            (0o777, 0o755, "go-w"),
            (0o666, 0o666, "=rw,+X"),
            (0o766, 0o777, "=rw,+X"),
            (0o000, 0o755, "u=rwx,go=rx"),
            (0o000, 0o755, "u=rwx,go=u-w"),
            (0o777, 0o700, "go="),
            (0o770, 0o755, "go=u-w"),
            (0o670, 0o644, "go=u-w"),
            (0o570, 0o555, "go=u-w"),
            (0o370, 0o311, "go=u-w"),
            (0o666, 0o644, "go-w"),
            (0o640, 0o642, "u+rw,g+r,o-x,o+w"),
        ];
        for &(from, want, s) in cases {
            assert_eq!(apply(s, from), want, "{s:?} on {from:#o}");
        }
    }

    #[test]
    fn capital_x_needs_a_directory_or_an_execute_bit() {
        // the usual recursive idiom: directories 755, files 644, executables 755
        assert_eq!(apply("u=rwX,go=rX", 0o600), 0o644);
        assert_eq!(apply("u=rwX,go=rX", 0o700), 0o755);
        assert_eq!(apply_dir("u=rwX,go=rX", 0o700), 0o755);
        assert_eq!(apply_dir("u=rwX,go=rX", 0o000), 0o755);
        assert_eq!(apply("a+X", 0o666), 0o666);
        assert_eq!(apply_dir("a+X", 0o124), 0o135);
        // the condition is the entry's mode before the change
        assert_eq!(apply("a-x,a+X", 0o744), 0o755);
        // `-X` clears like `-x`
        assert_eq!(apply("-X", 0o777), 0o666);
        assert_eq!(apply_dir("u-X", 0o777), 0o677);
        // sticky and set-id only count for more than `o`
        assert_eq!(apply_dir("o+t", 0o755), 0o755);
        assert_eq!(apply_dir("+t", 0o755), 0o1755);
        // `=` keeps the sticky bit unless `t` is named
        assert_eq!(apply_dir("a=rx", 0o1777), 0o1555);
    }
}
