//! What the agent reports about its machine.

/// The host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The OS's pretty name from `/etc/os-release` (`Debian GNU/Linux 12 (bookworm)`), else the
/// kernel's name.
pub fn os_name() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

/// The labels the agent reports: `os` (`linux`), `arch` (`x86_64`), `hostname`, then the
/// configured ones (which may override those three).
pub fn labels(
    configured: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    out.insert("os".to_owned(), std::env::consts::OS.to_owned());
    out.insert("arch".to_owned(), std::env::consts::ARCH.to_owned());
    out.insert("hostname".to_owned(), hostname());
    out.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// The OS users a script can run as: every user of the machine when the agent runs as root,
/// else only the agent's own user (it cannot switch users).
pub fn os_users() -> Vec<String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return nix::unistd::User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| vec![u.name])
            .unwrap_or_default();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut users: Vec<String> = passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty() && !n.starts_with('#') && !n.starts_with('+'))
        .take(10_000)
        .map(str::to_owned)
        .collect();
    users.sort();
    users.dedup();
    users
}
