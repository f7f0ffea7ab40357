//! `USER[:GROUP]` resolution against the rootfs's `/etc/passwd` and `/etc/group`, with runc's
//! (and so docker's) rules. Pure: the caller reads the files through a path-safe open inside
//! the rootfs; nothing from the image (no NSS module, no binary) ever runs.

use crate::spec::ProcessRules;
use crate::{Error, Result};

/// The identity a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in order, without duplicates: the user's groups from `/etc/group`
    /// (when no group was given), the additional groups, then the primary gid (docker's set;
    /// see [`ProcessRules`] for BuildKit's).
    pub groups: Vec<u32>,
    /// Home directory from the passwd entry, `/` when there is none.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|n| *n <= i32::MAX as u32)
}

/// The `:`-separated fields of each line of `text` (an `/etc/passwd` or `/etc/group`) that has
/// at least `min` of them; blank and `#` lines are skipped.
fn records(text: &str, min: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter_map(move |line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= min).then_some(f)
    })
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    records(text, 4).filter_map(|f| {
        Some(PasswdEntry {
            name: f[0],
            uid: parse_id(f[2])?,
            gid: parse_id(f[3])?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    records(text, 3).filter_map(|f| {
        Some(GroupEntry {
            name: f[0],
            gid: parse_id(f[2])?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (`""`, `USER`, `USER:GROUP`, names or numbers) and the additional groups
/// with `policy`'s supplementary groups. `passwd`/`group` are the files' contents, `None` when
/// the rootfs has no such file.
pub fn resolve(
    policy: ProcessRules,
    spec: &str,
    additional: &[String],
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_text = passwd.unwrap_or("");
    let group_text = group.unwrap_or("");

    // The user: default root.
    let mut name = String::new();
    let uid;
    let mut gid = 0;
    let mut home = "/".to_string();
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let numeric = parse_id(user_arg);
    let found = passwd_entries(passwd_text).find(|e| match numeric {
        Some(n) => e.uid == n,
        None => e.name == user_arg,
    });
    match (found, numeric) {
        (Some(e), _) => {
            name = e.name.to_string();
            uid = e.uid;
            gid = e.gid;
            if !e.home.is_empty() {
                home = e.home.to_string();
            }
        }
        (None, Some(n)) => uid = n,
        (None, None) => {
            return Err(Error::User(format!(
                "unable to find user {user_arg}: no matching entries in the image's /etc/passwd"
            )))
        }
    }

    let mut groups = Vec::new();
    match group_arg {
        Some(g) if !g.is_empty() => {
            // Explicit group: it becomes the primary gid and /etc/group adds no
            // supplementary groups (runc's rule).
            let numeric = parse_id(g);
            let found = group_entries(group_text).find(|e| match numeric {
                Some(n) => e.gid == n,
                None => e.name == g,
            });
            gid = match (found, numeric) {
                (Some(e), _) => e.gid,
                (None, Some(n)) => n,
                (None, None) => {
                    return Err(Error::User(format!(
                        "unable to find group {g}: no matching entries in the image's /etc/group"
                    )))
                }
            };
        }
        Some(_) => return Err(Error::User(format!("user `{spec}`: empty group after `:`"))),
        // BuildKit's GetUser takes an empty USER as `0:0`: no /etc/group lookup
        None if policy == ProcessRules::BuildKitRun && spec.is_empty() => {}
        None => {
            if !name.is_empty() {
                for e in group_entries(group_text) {
                    if e.members.contains(&name.as_str()) && !groups.contains(&e.gid) {
                        groups.push(e.gid);
                    }
                }
            }
        }
    }

    for g in additional {
        let gid = match parse_id(g) {
            Some(n) => n,
            None => group_entries(group_text)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::User(format!(
                        "unable to find group {g}: no matching entries in the image's /etc/group"
                    ))
                })?,
        };
        if !groups.contains(&gid) {
            groups.push(gid);
        }
    }

    // Docker's process also carries its primary gid in the supplementary list; BuildKit's
    // does not.
    if policy == ProcessRules::DockerRun && !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        lade:x:1000:1000:Lade:/home/lade:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:lade,other\naudio:x:29:lade\nlade:x:1000:\n\
        users:x:100:\n";

    fn r(spec: &str, add: &[&str]) -> Result<ExecUser> {
        let add: Vec<String> = add.iter().map(|s| s.to_string()).collect();
        resolve(
            ProcessRules::DockerRun,
            spec,
            &add,
            Some(PASSWD),
            Some(GROUP),
        )
    }

    #[test]
    fn default_is_root() {
        let u = r("", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, vec![0]);
        let u = resolve(ProcessRules::DockerRun, "", &[], None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
    }

    #[test]
    fn root_gets_its_memberships_in_docker_run() {
        // `docker run alpine id`: groups=0(root),1(bin),2(daemon),...
        let group = "root:x:0:\nbin:x:1:root,bin\nwheel:x:10:root,lade\n";
        for spec in ["", "root", "0"] {
            let u = resolve(
                ProcessRules::DockerRun,
                spec,
                &[],
                Some(PASSWD),
                Some(group),
            )
            .unwrap();
            assert_eq!(u.groups, vec![1, 10, 0], "{spec:?}");
        }
    }

    /// What BuildKit's RUN gets (checked with dockerd 20.10.24's BuildKit: `id` in RUN after
    /// `USER x`, with root a member of wheel).
    #[test]
    fn buildkit_run_groups() {
        let group = "root:x:0:\nwheel:x:10:lade,root\naudio:x:29:lade\nlade:x:1000:\n";
        let b = |spec: &str| {
            let u = resolve(
                ProcessRules::BuildKitRun,
                spec,
                &[],
                Some(PASSWD),
                Some(group),
            )
            .unwrap();
            (u.uid, u.gid, u.groups)
        };
        assert_eq!(b(""), (0, 0, vec![]));
        assert_eq!(b("root"), (0, 0, vec![10]));
        assert_eq!(b("0"), (0, 0, vec![10]));
        assert_eq!(b("lade"), (1000, 1000, vec![10, 29]));
        assert_eq!(b("1000"), (1000, 1000, vec![10, 29]));
        assert_eq!(b("lade:wheel"), (1000, 10, vec![]));
        assert_eq!(b("1000:29"), (1000, 29, vec![]));
        assert_eq!(b("lade:1000"), (1000, 1000, vec![]));
        assert_eq!(b("4242"), (4242, 0, vec![]));
        assert_eq!(b("4242:lade"), (4242, 1000, vec![]));
        assert_eq!(b("daemon"), (1, 1, vec![]));
    }

    #[test]
    fn name_gives_uid_gid_home_and_member_groups() {
        let u = r("lade", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/lade"));
        assert_eq!(u.groups, vec![10, 29, 1000]);
    }

    #[test]
    fn number_in_passwd_behaves_like_the_name() {
        assert_eq!(r("1000", &[]).unwrap(), r("lade", &[]).unwrap());
    }

    #[test]
    fn unknown_number_is_used_as_is() {
        let u = r("4242", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = r("4242:4343", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
    }

    #[test]
    fn explicit_group_drops_member_groups() {
        let u = r("lade:users", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 100));
        assert_eq!(u.groups, vec![100]);
        let u = r("lade:10", &[]).unwrap();
        assert_eq!(u.gid, 10);
    }

    #[test]
    fn additional_groups_are_appended_once() {
        let u = r("lade", &["users", "10", "777"]).unwrap();
        assert_eq!(u.groups, vec![10, 29, 100, 777, 1000]);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(r("nobody", &[])
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(r("lade:nogroup", &[])
            .unwrap_err()
            .to_string()
            .contains("unable to find group nogroup"));
        assert!(r("lade", &["nogroup"]).is_err());
        assert!(r("lade:", &[]).is_err());
        // Names never fall back to numbers beyond the i32 range.
        assert!(r("99999999999", &[]).is_err());
    }
}
