//! `--chown` (and WORKDIR's owner) resolution against an image's own `/etc/passwd` and
//! `/etc/group`, as BuildKit's file ops do: nothing from the image is executed and no NSS is
//! consulted. `USER` gives uid and gid from the passwd entry (or both equal to the number);
//! `USER:GROUP` takes the group from `/etc/group` (or the number).

use crate::rootfs::Root;
use crate::{Error, Result};

const MAX_FILE: u64 = 16 << 20;

fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Looks `name` up in passwd text: (uid, gid).
pub fn passwd_lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((numeric(f[2])?, numeric(f[3])?))
        } else {
            None
        }
    })
}

/// Looks `name` up in group text: gid.
pub fn group_lookup(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            numeric(f[2])
        } else {
            None
        }
    })
}

/// Resolves `spec` (`user`, `user:group`, names or numbers) with files read from `root`.
pub fn resolve(spec: &str, root: &Root) -> Result<(u32, u32)> {
    let read = |p: &str| -> Result<Option<String>> {
        Ok(root
            .read_small(p, MAX_FILE)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match numeric(user) {
        Some(n) => (n, n),
        None => {
            let passwd = read("/etc/passwd")?;
            passwd
                .as_deref()
                .and_then(|t| passwd_lookup(t, user))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "unable to find user {user}: no matching entries in passwd file"
                    ))
                })?
        }
    };
    if let Some(g) = group {
        gid = match numeric(g) {
            Some(n) => n,
            None => {
                let groups = read("/etc/group")?;
                groups
                    .as_deref()
                    .and_then(|t| group_lookup(t, g))
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?
            }
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:bob\n").unwrap();
        let root = Root::open(t.path()).unwrap();
        assert_eq!(resolve("bob", &root).unwrap(), (1000, 1001));
        assert_eq!(resolve("bob:staff", &root).unwrap(), (1000, 50));
        assert_eq!(resolve("7", &root).unwrap(), (7, 7));
        assert_eq!(resolve("7:8", &root).unwrap(), (7, 8));
        assert_eq!(resolve("0:staff", &root).unwrap(), (0, 50));
        assert!(resolve("nobody", &root).is_err());
        assert!(resolve("bob:nogroup", &root).is_err());
    }
}
