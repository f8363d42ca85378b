//! What a subscription's plugin may reach: the `egress` allow-list and its
//! per-attempt limits, parsed once when the subscription is created.
//!
//! An entry is `scheme://host[:port]`: `http` or `https`; a host name, an
//! IP literal (`127.0.0.1`, `[::1]`), `*.example.org` (any subdomain, not the
//! apex) or `*` (any host); a port number, `*` (any port), or none (the
//! scheme's default, 80 or 443). Requests are matched on the parsed URI's
//! scheme, host and port, never on the raw authority (no userinfo tricks).

use std::time::Duration;

/// Default time limit of one request (it is also bounded by the attempt's
/// deadline): 10 s, the usual webhook timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default cap on a response body: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Default number of requests one attempt may make.
pub const DEFAULT_MAX_REQUESTS: u32 = 16;
/// Largest `max_response_bytes` a subscription may set: 64 MiB, the size of
/// a plugin's whole memory by default.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Most requests one attempt may be allowed.
pub const MAX_REQUESTS: u32 = 1000;
/// Most entries in one allow-list.
pub const MAX_ALLOW_ENTRIES: usize = 256;

/// The scheme of an allowed destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }

    /// The port used when a URI names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Any host.
    Any,
    /// Exactly this host (lowercase; an IPv6 literal without brackets).
    Exact(String),
    /// Any subdomain of this suffix (stored with its leading dot).
    Subdomains(String),
}

/// One parsed `egress.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    scheme: Scheme,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

impl AllowRule {
    /// Parse `scheme://host[:port]`, refusing anything else (paths, queries,
    /// userinfo) with a message that says what is wrong.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid egress.allow entry {entry:?}: {why}"));
        let Some((scheme, rest)) = entry.split_once("://") else {
            return bad("use scheme://host[:port], e.g. https://api.example.com");
        };
        let Some(scheme) = Scheme::parse(scheme) else {
            return bad("the scheme must be http or https");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return bad("give only scheme://host[:port]: no path, query, user or empty host");
        }
        let Some((host, port)) = split_host_port(rest) else {
            return bad("bad host or port");
        };
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return bad("the port must be 1 to 65535 or *"),
            },
        };
        let host = host.to_ascii_lowercase();
        let pattern = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_name(suffix) {
                return bad("a wildcard host is *.name, e.g. *.example.org");
            }
            HostPattern::Subdomains(format!(".{suffix}"))
        } else if valid_name(&host) || host.parse::<std::net::IpAddr>().is_ok() {
            HostPattern::Exact(host)
        } else {
            return bad("the host must be a name, an IP address, *.name or *");
        };
        Ok(Self {
            scheme,
            host: pattern,
            port,
        })
    }

    /// Whether a request to `scheme://host:port` matches. `host` is the
    /// parsed URI's host, lowercase, an IPv6 literal without brackets.
    fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.scheme == scheme
            && self.port.is_none_or(|p| p == port)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => h == host,
                HostPattern::Subdomains(suffix) => {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                }
            }
    }
}

/// Split `host[:port]`, where host may be a bracketed IPv6 literal.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        None => Some((s, None)),
        Some((h, p)) if !p.contains(':') && !h.is_empty() => Some((h, Some(p))),
        _ => None,
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A subscription's egress settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressRules {
    pub allow: Vec<AllowRule>,
    /// Time limit of one request, from its start to the end of its body.
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub max_requests: u32,
}

impl EgressRules {
    /// Check settings as an operator wrote them.
    pub fn new(
        allow: &[String],
        timeout_ms: u64,
        max_response_bytes: u64,
        max_requests: u32,
    ) -> Result<Self, String> {
        if allow.len() > MAX_ALLOW_ENTRIES {
            return Err(format!(
                "egress.allow may have at most {MAX_ALLOW_ENTRIES} entries"
            ));
        }
        if timeout_ms == 0 {
            return Err("egress.timeout_ms must be at least 1".into());
        }
        if max_response_bytes == 0 || max_response_bytes > MAX_RESPONSE_BYTES {
            return Err(format!(
                "egress.max_response_bytes must be between 1 and {MAX_RESPONSE_BYTES}"
            ));
        }
        if max_requests == 0 || max_requests > MAX_REQUESTS {
            return Err(format!(
                "egress.max_requests must be between 1 and {MAX_REQUESTS}"
            ));
        }
        Ok(Self {
            allow: allow
                .iter()
                .map(|e| AllowRule::parse(e))
                .collect::<Result<_, _>>()?,
            timeout: Duration::from_millis(timeout_ms),
            max_response_bytes,
            max_requests,
        })
    }

    /// Whether the allow-list admits `scheme://host:port`.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.allow.iter().any(|r| r.matches(scheme, host, port))
    }
}

/// The parts of a request URI that egress checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lowercase; an IPv6 literal without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// From a request URI, `None` if it has no usable scheme or host.
    pub fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = Scheme::parse(uri.scheme_str()?)?;
        let host = uri.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        Some(Self { scheme, host, port })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str]) -> EgressRules {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        EgressRules::new(&allow, 1000, 1024, 4).expect("valid rules")
    }

    fn allowed(rules: &EgressRules, uri: &str) -> bool {
        let uri: http::Uri = uri.parse().expect("uri");
        let t = Target::of(&uri).expect("target");
        rules.allows(t.scheme, &t.host, t.port)
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let r = rules(&[
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "https://*.example.org:443",
            "http://[::1]:*",
        ]);
        let check = |uri: &str, expected: bool| assert_eq!(allowed(&r, uri), expected, "{uri}");
        check("https://api.example.com/v1/pay?x=1", true);
        check("https://API.Example.com:443/", true);
        check("http://api.example.com/", false);
        check("https://api.example.com:8443/", false);
        check("https://evil.com/", false);
        check("https://api.example.com.evil.com/", false);
        check("http://127.0.0.1:8080/hook", true);
        check("http://127.0.0.1:8081/hook", false);
        check("https://a.example.org/", true);
        check("https://a.b.example.org/", true);
        check("https://example.org/", false);
        check("https://badexample.org/", false);
        check("http://[::1]:9/", true);
        // userinfo never counts as the host
        check("https://api.example.com@evil.com/", false);
        check("https://evil.com@api.example.com/", true);
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for entry in [
            "api.example.com",
            "ftp://x.org",
            "https://x.org/path",
            "https://user@x.org",
            "https://x.org:0",
            "https://x.org:99999",
            "https://*x.org",
            "https://",
            "https://[zz]:1",
        ] {
            let err = AllowRule::parse(entry).expect_err(entry);
            assert!(err.contains("egress.allow"), "{err}");
        }
        assert!(EgressRules::new(&[], 1000, 0, 1).is_err());
        assert!(EgressRules::new(&[], 1000, 1, 0).is_err());
        assert!(EgressRules::new(&[], 0, 1, 1).is_err());
    }

    #[test]
    fn targets_print_as_scheme_host_port() {
        let t = |u: &str| Target::of(&u.parse().unwrap()).unwrap().to_string();
        assert_eq!(t("https://x.org/a"), "https://x.org:443");
        assert_eq!(
            t("http://[::ffff:127.0.0.1]:80/"),
            "http://[::ffff:127.0.0.1]:80"
        );
    }
}
