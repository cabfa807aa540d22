//! Checks of what an admin sends for users and roles: ids, names, texts, passwords,
//! address lists, permission names.

use std::collections::BTreeSet;

use haechi_types::{ident, Error, Result};
use ipnet::IpNet;
use rand::Rng;
use secrecy::SecretString;

use crate::permission::Permission;

/// A user id: a name under `haechi_types::ident` (1 to 64 characters, NFKC, no invisible or
/// control characters, no spaces), and no `@` or `/` (the gateway login name is
/// `<user_id>@<account>`; the id is a path segment).
pub(crate) fn validate_user_id(user_id: &str) -> Result<()> {
    ident::check("user_id", user_id, 64, ident::Spaces::Refused)?;
    if let Some(bad) = user_id.chars().find(|c| *c == '@' || *c == '/') {
        return Err(Error::field(
            "user_id",
            format_args!("must not contain {bad:?} (no '@' or '/')"),
        ));
    }
    Ok(())
}

/// A role name: a name under `haechi_types::ident` with single inner spaces, not a number.
pub(crate) fn validate_role_name(name: &str) -> Result<()> {
    ident::check("name", name, 100, ident::Spaces::Inner)?;
    if name.parse::<i64>().is_ok() {
        return Err(Error::field(
            "name",
            "must not be a number (roles are looked up by id or name)",
        ));
    }
    Ok(())
}

pub(crate) fn validate_text(field: &str, value: &str, max: usize, required: bool) -> Result<()> {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    if n > max {
        return Err(Error::field(
            field,
            format_args!("must be at most {max} characters (got {n})"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn validate_password(pw: &SecretString) -> Result<()> {
    use secrecy::ExposeSecret;
    let n = pw.expose_secret().chars().count();
    if n < 8 {
        return Err(Error::field("password", "must be at least 8 characters"));
    }
    if pw.expose_secret().len() > 1024 {
        return Err(Error::field("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Normalises an allow-list: CIDRs or single addresses, canonical text, as JSON.
pub(crate) fn normalize_ips(list: &[String]) -> Result<String> {
    let mut out = Vec::with_capacity(list.len());
    if list.len() > 256 {
        return Err(Error::field("allowed_ips", "at most 256 entries"));
    }
    for (i, s) in list.iter().enumerate() {
        let s = s.trim();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                Error::field(
                    format!("allowed_ips[{i}]"),
                    format_args!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                )
            })?;
        out.push(net.trunc().to_string());
    }
    Ok(serde_json::to_string(&out)?)
}

pub(crate) fn parse_permissions(list: &[String]) -> Result<Vec<Permission>> {
    let mut set = BTreeSet::new();
    for (i, s) in list.iter().enumerate() {
        let p = Permission::parse(s).ok_or_else(|| {
            let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            Error::field(
                format!("permissions[{i}]"),
                format_args!("unknown permission {s:?}; known: {}", known.join(", ")),
            )
        })?;
        set.insert(p.as_str());
    }
    Ok(set.into_iter().filter_map(Permission::parse).collect())
}

pub(crate) fn random_password() -> SecretString {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let s: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    SecretString::from(s)
}

pub(crate) fn parse_allowed_ips(json: &str) -> Result<Vec<IpNet>> {
    let list: Vec<String> = serde_json::from_str(json)?;
    list.iter()
        .map(|s| s.parse::<IpNet>().map_err(Error::internal))
        .collect()
}
