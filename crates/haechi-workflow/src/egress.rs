//! Where http steps may connect (CONTRACT §9): `workflow.http_allow`, `workflow.http_deny` and
//! the built-in deny list, checked on every address a name resolves to before a connection is
//! made to it.
//!
//! The http client resolves names through [`EgressResolver`], which hands the connector only
//! the addresses the policy lets through, so the address checked is the address connected to
//! (a DNS answer that changes between a check and a connect cannot swap it). Addresses written
//! in the URL itself are never resolved: the step checks them with [`EgressPolicy::check`]
//! before it sends anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Denied whatever the configuration says: link-local networks, where every cloud answers its
/// instance metadata, and the cloud metadata and host-agent addresses outside them.
const BUILT_IN_DENY: &[(&str, &str)] = &[
    ("0.0.0.0/8", "'this host' addresses"),
    ("::/128", "the unspecified address"),
    ("169.254.0.0/16", "link-local, cloud instance metadata"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "AWS instance metadata over IPv6"),
    ("100.100.100.200/32", "Alibaba Cloud instance metadata"),
    ("168.63.129.16/32", "Azure host agent (WireServer)"),
    ("metadata.google.internal", "Google Cloud instance metadata"),
    ("metadata.goog", "Google Cloud instance metadata"),
    ("metadata.tencentyun.com", "Tencent Cloud instance metadata"),
    ("instance-data.ec2.internal", "AWS instance metadata"),
];

/// The well-known NAT64 prefix: an address in it reaches the IPv4 address in its last 32 bits.
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

#[derive(Debug, Clone)]
enum Matcher {
    Net(IpNet),
    /// A host name, lower case, without a trailing dot.
    Name(String),
    /// `*.example.com`: any name ending in `.example.com`, stored with its leading dot.
    Suffix(String),
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    /// The rule as written.
    text: String,
    /// Where it comes from: `workflow.http_deny`, `workflow.http_allow`, or the built-in
    /// list's reason.
    origin: String,
}

impl Rule {
    fn parse(text: &str, origin: String) -> Result<Rule, String> {
        let t = text.trim();
        let matcher = if let Ok(net) = t.parse::<IpNet>() {
            Matcher::Net(net.trunc())
        } else if let Ok(ip) = t.parse::<IpAddr>() {
            Matcher::Net(IpNet::from(ip))
        } else if let Some(rest) = t.strip_prefix("*.") {
            Matcher::Suffix(format!(".{}", host_name(rest, text)?))
        } else {
            Matcher::Name(host_name(t, text)?)
        };
        Ok(Rule {
            matcher,
            text: t.to_owned(),
            origin,
        })
    }

    fn matches(&self, name: Option<&str>, ip: Option<IpAddr>) -> bool {
        match (&self.matcher, name, ip) {
            (Matcher::Net(net), _, Some(ip)) => net.contains(&ip),
            (Matcher::Name(n), Some(name), _) => n == name,
            (Matcher::Suffix(s), Some(name), _) => name.ends_with(s.as_str()),
            _ => false,
        }
    }
}

/// A host name rule: letters, digits, `-`, `_` and dots; kept lower case without a final dot.
fn host_name(t: &str, rule: &str) -> Result<String, String> {
    let n = t.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if n.is_empty() || n.len() > 253 || !n.split('.').all(label_ok) {
        return Err(format!(
            "'{rule}' is neither a CIDR (10.0.0.0/8, fd00::/8), an address, a host name \
             (api.example.com) nor a wildcard name (*.example.com)"
        ));
    }
    Ok(n)
}

/// A name as compared with the rules.
fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The addresses a connection to `ip` may reach, for the rules: itself, as IPv4 when it is an
/// IPv4-mapped IPv6 address, and the IPv4 address a NAT64 address stands for.
fn forms(ip: IpAddr) -> Vec<IpAddr> {
    let ip = ip.to_canonical();
    let mut out = vec![ip];
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        if s[..6] == NAT64.segments()[..6] {
            let o = v6.octets();
            out.push(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])));
        }
    }
    out
}

/// Why a connection was refused; its text names the rule. The step fails with it.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The egress rules of http steps.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl EgressPolicy {
    /// The policy from `workflow.http_allow` and `workflow.http_deny`; the error names the key
    /// and the entry.
    pub fn new(allow: &[String], deny: &[String]) -> Result<EgressPolicy, String> {
        let mut deny_rules: Vec<Rule> = BUILT_IN_DENY
            .iter()
            .map(|(text, why)| {
                Rule::parse(text, format!("the built-in deny list ({why})"))
                    .expect("built-in rules parse")
            })
            .collect();
        for (i, d) in deny.iter().enumerate() {
            deny_rules.push(
                Rule::parse(d, "workflow.http_deny".to_owned())
                    .map_err(|m| format!("workflow.http_deny[{i}]: {m}"))?,
            );
        }
        let mut allow_rules = Vec::with_capacity(allow.len());
        for (i, a) in allow.iter().enumerate() {
            allow_rules.push(
                Rule::parse(a, "workflow.http_allow".to_owned())
                    .map_err(|m| format!("workflow.http_allow[{i}]: {m}"))?,
            );
        }
        Ok(EgressPolicy {
            allow: allow_rules,
            deny: deny_rules,
        })
    }

    /// May a step connect to `ip`, reached through the host name `name` (absent when the URL
    /// gives the address itself)? Deny wins; with an allow list, only what it names passes.
    pub fn check(&self, name: Option<&str>, ip: IpAddr) -> Result<(), Refusal> {
        let name = name.map(normal_name);
        let name = name.as_deref();
        let ips = forms(ip);
        let shown = match name {
            Some(n) => format!("{n} ({ip})"),
            None => ip.to_string(),
        };
        let hits =
            |r: &Rule| r.matches(name, None) || ips.iter().any(|a| r.matches(None, Some(*a)));
        if let Some(r) = self.deny.iter().find(|r| hits(r)) {
            return Err(Refusal(format!(
                "egress refused: {shown} is denied by rule '{}' of {}; nothing was sent",
                r.text, r.origin
            )));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(hits) {
            return Err(Refusal(format!(
                "egress refused: {shown} is not in workflow.http_allow; nothing was sent"
            )));
        }
        Ok(())
    }

    /// A refusal that needs no address: the name itself is denied, or an allow list names
    /// neither it nor any network (so no address of it could pass). Checked before resolving.
    pub fn check_name(&self, name: &str) -> Result<(), Refusal> {
        let n = normal_name(name);
        if let Some(r) = self.deny.iter().find(|r| r.matches(Some(&n), None)) {
            return Err(Refusal(format!(
                "egress refused: {n} is denied by rule '{}' of {}; nothing was sent",
                r.text, r.origin
            )));
        }
        let any_net = self
            .allow
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Net(_)));
        if !self.allow.is_empty()
            && !any_net
            && !self.allow.iter().any(|r| r.matches(Some(&n), None))
        {
            return Err(Refusal(format!(
                "egress refused: {n} is not in workflow.http_allow; nothing was sent"
            )));
        }
        Ok(())
    }
}

/// The http client's resolver: the system's resolver, then the policy on each address.
pub(crate) struct EgressResolver {
    pub policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_name(&host)?;
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let mut passed = Vec::with_capacity(found.len());
            for a in found {
                match policy.check(Some(&host), a.ip()) {
                    Ok(()) => passed.push(a),
                    Err(r) => refused = refused.or(Some(r)),
                }
            }
            match (passed.is_empty(), refused) {
                (true, Some(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(passed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        EgressPolicy::new(&v(allow), &v(deny)).unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_denied_by_default() {
        let p = policy(&[], &[]);
        for a in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "0.0.0.0",
        ] {
            let e = p.check(None, ip(a)).unwrap_err().0;
            assert!(e.contains("built-in deny list"), "{a}: {e}");
        }
        let e = p.check_name("Metadata.Google.Internal.").unwrap_err().0;
        assert!(e.contains("'metadata.google.internal'"), "{e}");
        // Private networks and loopback stay reachable.
        for a in ["10.1.2.3", "192.168.0.10", "172.16.5.5", "127.0.0.1", "::1"] {
            p.check(Some("svc.internal"), ip(a)).unwrap();
        }
    }

    #[test]
    fn deny_wins_over_allow_and_allow_restricts() {
        let p = policy(
            &["10.0.0.0/8", "api.example.com", "*.corp.example"],
            &["10.9.0.0/16"],
        );
        p.check(None, ip("10.1.1.1")).unwrap();
        p.check(Some("api.example.com"), ip("203.0.113.5")).unwrap();
        p.check(Some("x.corp.example"), ip("203.0.113.6")).unwrap();
        let e = p.check(None, ip("10.9.1.1")).unwrap_err().0;
        assert!(
            e.contains("rule '10.9.0.0/16' of workflow.http_deny"),
            "{e}"
        );
        let e = p
            .check(Some("other.example"), ip("203.0.113.7"))
            .unwrap_err()
            .0;
        assert!(e.contains("not in workflow.http_allow"), "{e}");
        // Allowed by name, still denied by address.
        let e = p
            .check(Some("api.example.com"), ip("169.254.169.254"))
            .unwrap_err()
            .0;
        assert!(e.contains("built-in"), "{e}");
        assert!(
            p.check_name("corp.example").is_ok(),
            "a CIDR may still admit it"
        );
        let names_only = policy(&["api.example.com"], &[]);
        assert!(names_only.check_name("evil.example").is_err());
        assert!(names_only.check_name("API.example.com").is_ok());
    }

    #[test]
    fn bad_rules_name_the_key_and_entry() {
        let e = EgressPolicy::new(&[], &["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.starts_with("workflow.http_deny[0]:"), "{e}");
        let e = EgressPolicy::new(&["ok.example".into(), "bad host".into()], &[]).unwrap_err();
        assert!(e.starts_with("workflow.http_allow[1]:"), "{e}");
        let p = policy(&[], &["127.0.0.2"]);
        assert!(p.check(None, ip("127.0.0.2")).is_err());
        assert!(p.check(None, ip("127.0.0.1")).is_ok());
    }
}
