//! Linux errno and signal names as result documents print them.

const NAMES: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (8, "ENOEXEC"),
    (9, "EBADF"),
    (10, "ECHILD"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (15, "ENOTBLK"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (18, "EXDEV"),
    (19, "ENODEV"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (26, "ETXTBSY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (29, "ESPIPE"),
    (30, "EROFS"),
    (31, "EMLINK"),
    (32, "EPIPE"),
    (33, "EDOM"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (36, "ENAMETOOLONG"),
    (37, "ENOLCK"),
    (38, "ENOSYS"),
    (75, "EOVERFLOW"),
    (95, "EOPNOTSUPP"),
];

/// The name of errno `n` (`"EINVAL"`), or `"E<n>"` for numbers without one here.
pub fn errno_name(n: i32) -> String {
    NAMES
        .iter()
        .find(|(c, _)| *c == n)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("E{n}"))
}

/// The number of an errno name (inverse of [`errno_name`]).
pub fn errno_code(name: &str) -> Option<i32> {
    NAMES
        .iter()
        .find(|(_, s)| *s == name)
        .map(|(c, _)| *c)
        .or_else(|| name.strip_prefix('E')?.parse().ok())
}

/// `"SIGSEGV"`, `"SIGBUS"`, or `"SIG<n>"`.
pub fn signal_name(signo: i32) -> String {
    match signo {
        11 => "SIGSEGV".into(),
        7 => "SIGBUS".into(),
        n => format!("SIG{n}"),
    }
}

/// The `si_code` name for a SIGSEGV/SIGBUS.
pub fn code_name(signo: i32, code: i32) -> String {
    let s = match (signo, code) {
        (11, 1) => "SEGV_MAPERR",
        (11, 2) => "SEGV_ACCERR",
        (11, 3) => "SEGV_BNDERR",
        (11, 4) => "SEGV_PKUERR",
        (7, 1) => "BUS_ADRALN",
        (7, 2) => "BUS_ADRERR",
        (7, 3) => "BUS_OBJERR",
        (7, 4) => "BUS_MCEERR_AR",
        (7, 5) => "BUS_MCEERR_AO",
        (_, 0x80) => "SI_KERNEL",
        _ => return format!("{code}"),
    };
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(200), "E200");
        assert_eq!(errno_code("ENOMEM"), Some(12));
        assert_eq!(errno_code("E200"), Some(200));
        assert_eq!(code_name(11, 2), "SEGV_ACCERR");
        assert_eq!(code_name(7, 2), "BUS_ADRERR");
    }
}
