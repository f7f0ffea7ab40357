//! Linux capability names and docker's default set.

use crate::{Error, Result};

/// Capability names (without `CAP_`) and numbers, as in `linux/capability.h`.
const NAMES: &[(&str, u8)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Number of a capability given as `NAME` or `CAP_NAME` (any case).
pub fn by_name(name: &str) -> Result<u8> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(_, v)| *v)
        .ok_or_else(|| Error::InvalidSpec(format!("unknown capability `{name}`")))
}

/// Bit mask of the named capabilities (`None`: docker's default set).
pub fn mask(names: Option<&[String]>) -> Result<u64> {
    let mut m = 0u64;
    match names {
        Some(list) => {
            for n in list {
                m |= 1 << by_name(n)?;
            }
        }
        None => {
            for n in DOCKER_DEFAULT {
                m |= 1 << by_name(n)?;
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_default_mask_matches_docker() {
        // `grep CapBnd /proc/self/status` in `docker run` (20.10): 00000000a80425fb.
        assert_eq!(mask(None).unwrap(), 0xa80425fb);
    }

    #[test]
    fn names_parse() {
        assert_eq!(by_name("cap_sys_admin").unwrap(), 21);
        assert_eq!(by_name("NET_RAW").unwrap(), 13);
        assert!(by_name("nope").is_err());
    }
}
