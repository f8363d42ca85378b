//! Where outbound requests may connect, and the connections themselves.
//!
//! A name is resolved once; every address that is not globally routable is
//! dropped unless the operator allowed its range at start; the connection
//! goes to exactly the vetted addresses (no second lookup, so a name cannot
//! switch to an internal address between the check and the connect), and TLS
//! is checked against the host name the plugin asked for.

use super::rules::{Scheme, Target};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Ranges that are never reached unless an operator allows them: everything
/// that is not a globally routable unicast address.
const NON_GLOBAL: &[&str] = &[
    "0.0.0.0/8",       // "this network", unspecified
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // carrier-grade NAT
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local, incl. the cloud metadata address
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation
    "203.0.113.0/24",  // documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, broadcast
    "::/128",          // unspecified
    "::1/128",         // loopback
    "::/96",           // IPv4-compatible (deprecated)
    "64:ff9b::/96",    // NAT64: reaches IPv4 addresses behind a translator
    "64:ff9b:1::/48",  // local NAT64
    "100::/64",        // discard
    "2001::/23",       // IETF protocol assignments, incl. Teredo
    "2001:db8::/32",   // documentation
    "2002::/16",       // 6to4: embeds an IPv4 address
    "fc00::/7",        // unique local
    "fe80::/10",       // link-local
    "ff00::/8",        // multicast
];

/// Where outbound connections may go: public addresses, plus the ranges the
/// operator allowed (`--egress-allow-cidr`).
#[derive(Debug, Clone)]
pub(crate) struct AddressPolicy {
    non_global: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub(crate) fn new(allowed: Vec<IpNet>) -> Self {
        let non_global = NON_GLOBAL
            .iter()
            .map(|n| n.parse().expect("the built-in ranges parse"))
            .collect();
        Self {
            non_global,
            allowed,
        }
    }

    /// Whether a connection to `addr` is allowed. An IPv4-mapped IPv6
    /// address is judged as the IPv4 address it is.
    pub(crate) fn permits(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        if self.allowed.iter().any(|n| n.contains(&addr)) {
            return true;
        }
        let global_unicast = match addr {
            IpAddr::V4(_) => true,
            // Only 2000::/3 is assigned for global unicast.
            IpAddr::V6(v6) => (v6.segments()[0] & 0xe000) == 0x2000,
        };
        global_unicast && !self.non_global.iter().any(|n| n.contains(&addr))
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Why no connection was made; carried to the guest as a `wasi:http` error code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("destination-IP-prohibited: {0}")]
    Prohibited(String),
    #[error("DNS-error: {0}")]
    Dns(String),
    #[error("connection-refused: {0}")]
    Refused(String),
    #[error("connection-timeout: no connection to {0} within {1} ms")]
    Timeout(String, u128),
    #[error("TLS-certificate-error: {0}")]
    Tls(String),
}

impl ConnectError {
    pub(crate) fn code(&self) -> wasmtime_wasi_http::Error {
        use wasmtime_wasi_http::Error as E;
        match self {
            Self::Prohibited(_) => E::DestinationIpProhibited,
            Self::Dns(text) => E::DnsError {
                rcode: Some(text.clone()),
                info_code: None,
            },
            Self::Refused(_) => E::ConnectionRefused,
            Self::Timeout(..) => E::ConnectionTimeout,
            Self::Tls(_) => E::TlsCertificateError,
        }
    }
}

/// Resolve `target`'s host once and keep the addresses the policy permits.
pub(crate) async fn vetted_addresses(
    policy: &AddressPolicy,
    target: &Target,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let found: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| ConnectError::Dns(format!("cannot resolve {}: {e}", target.host)))?
            .collect(),
    };
    if found.is_empty() {
        return Err(ConnectError::Dns(format!("{} has no address", target.host)));
    }
    let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
        found.into_iter().partition(|a| policy.permits(a.ip()));
    if permitted.is_empty() {
        let list: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
        return Err(ConnectError::Prohibited(format!(
            "{} resolves only to addresses that are not public ({}); an operator can allow \
             a range with --egress-allow-cidr",
            target.host,
            list.join(", ")
        )));
    }
    Ok(permitted)
}

/// The connector of a subscription's HTTP client: vetted addresses, then TLS
/// for https.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) policy: Arc<AddressPolicy>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Bound on resolving and connecting (the request as a whole is bounded
    /// by the attempt's deadline as well).
    pub(crate) connect_timeout: Duration,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let target =
                Target::of(&uri).ok_or_else(|| ConnectError::Dns(format!("no host in {uri}")))?;
            let limit = this.connect_timeout;
            match tokio::time::timeout(limit, this.connect(&target)).await {
                Ok(result) => result,
                Err(_) => Err(ConnectError::Timeout(target.to_string(), limit.as_millis())),
            }
        })
    }
}

impl Connector {
    async fn connect(&self, target: &Target) -> Result<Conn, ConnectError> {
        let addrs = vetted_addresses(&self.policy, target).await?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        let tcp = tcp.ok_or_else(|| ConnectError::Refused(last.unwrap_or_default()))?;
        // Requests are small and answered at once: don't wait to fill packets.
        let _ = tcp.set_nodelay(true);
        match target.scheme {
            Scheme::Http => Ok(Conn(TokioIo::new(Box::new(tcp)))),
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|e| ConnectError::Tls(format!("{}: {e}", target.host)))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Tls(format!("{target}: {e}")))?;
                Ok(Conn(TokioIo::new(Box::new(tls))))
            }
        }
    }
}

/// The TLS settings of every outbound connection (plugins', and the client
/// commands'): the webpki (Mozilla) roots, plus the operator's extra roots
/// (`--egress-ca-file`, `--ca-cert`).
pub(crate) fn tls_config(extra_roots_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("cannot read the CA file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in the CA file: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("the CA file holds no PEM certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A plain or TLS connection, as hyper's client drives it.
pub(crate) struct Conn(TokioIo<Box<dyn Io>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_by_default() {
        let policy = AddressPolicy::new(Vec::new());
        let check = |addr: &str, expected: bool| {
            let ip: IpAddr = addr.parse().expect(addr);
            assert_eq!(policy.permits(ip), expected, "{addr}");
        };
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "1.1.1.1"] {
            check(public, true);
        }
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            check(private, false);
        }
    }

    #[test]
    fn the_operator_can_open_a_range() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        // The mapped form is the same address.
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("::1".parse().unwrap()));
        assert!(!policy.permits("169.254.169.254".parse().unwrap()));
    }

    #[tokio::test]
    async fn names_are_vetted_by_what_they_resolve_to() {
        let policy = AddressPolicy::new(Vec::new());
        let target = Target {
            scheme: Scheme::Http,
            host: "localhost".into(),
            port: 80,
        };
        let err = vetted_addresses(&policy, &target)
            .await
            .expect_err("localhost is loopback");
        assert!(matches!(err, ConnectError::Prohibited(_)), "{err}");
        let open = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let addrs = vetted_addresses(&open, &target).await.expect("allowed");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn extra_roots_are_read_from_pem() {
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some(b"not pem")).is_err());
        let pem = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/tls/ca.pem"),
        )
        .expect("test CA");
        assert!(tls_config(Some(&pem)).is_ok());
    }

    #[test]
    fn the_built_in_ranges_are_network_addresses() {
        // Guard against a typo in the table: every entry parses and is a
        // network address.
        for n in NON_GLOBAL {
            let net: IpNet = n.parse().expect(n);
            assert_eq!(net.network(), net.trunc().network(), "{n}");
        }
    }
}
