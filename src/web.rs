//! The HTTPS client for health checks and Slack, built on first use: its TLS roots are loaded
//! only by an invocation that calls out, never at a cold start.
//!
//! Where it may call is decided here, once for both uses:
//!
//! - **no redirects**: a 3xx is an answer (an unhealthy one), never a hop to somewhere else;
//! - **no loopback, link-local, unspecified or metadata addresses** ([`refused`]): a URL naming one
//!   is refused where it is configured ([`refused_host`]), and every name is resolved by
//!   [`Guarded`], which drops such addresses — a public name that resolves to `169.254.169.254`
//!   (DNS rebinding) reaches nothing;
//! - **no proxy from the environment**: a proxy would resolve the names itself, past the guard.
//!
//! [`Endpoints::Local`] (`CONVEYOR_ALLOW_LOCAL_ENDPOINTS=1`: tests and the local playground only)
//! also admits this machine's loopback addresses; link-local, unspecified and metadata addresses
//! stay refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The variable that switches [`Endpoints::Local`] on (`1` or `true`).
pub const LOCAL_ENDPOINTS_VARIABLE: &str = "CONVEYOR_ALLOW_LOCAL_ENDPOINTS";

/// Which endpoints Conveyor may call: public ones (every installation), or also this machine's
/// (tests and the local playground, whose health URLs and webhooks are local HTTP servers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Endpoints {
    /// Not loopback, link-local, unspecified or metadata addresses; https unless a config says
    /// otherwise; Slack webhooks on Slack's hosts only.
    #[default]
    Public,
    /// Also loopback hosts, over plain http without a config key, and webhooks on any host.
    Local,
}

impl Endpoints {
    /// `CONVEYOR_ALLOW_LOCAL_ENDPOINTS`: unset, empty, `0` or `false` is [`Endpoints::Public`];
    /// `1` or `true` is [`Endpoints::Local`]; anything else is an error (never silently public or
    /// local).
    pub fn from_variable(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or_default() {
            "" | "0" | "false" => Ok(Endpoints::Public),
            "1" | "true" => Ok(Endpoints::Local),
            other => Err(format!(
                "{LOCAL_ENDPOINTS_VARIABLE} is {other:?}: it must be 1 (tests and the local playground only) or unset"
            )),
        }
    }

    /// Whether addresses of `kind` may be called.
    pub fn admits(self, kind: Refused) -> bool {
        self == Endpoints::Local && kind == Refused::Loopback
    }
}

/// Addresses Conveyor never calls (loopback ones only with [`Endpoints::Local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `127.0.0.0/8`, `::1`, `localhost`.
    #[error("a loopback address")]
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    #[error("a link-local address")]
    LinkLocal,
    /// `0.0.0.0/8`, `::`.
    #[error("an unspecified address")]
    Unspecified,
    /// The EC2 instance metadata service (`169.254.169.254`, `fd00:ec2::254`) and the ECS task
    /// metadata and credentials endpoint (`169.254.170.2`).
    #[error("a metadata address")]
    Metadata,
}

/// What kind of refused address `ip` is, if it is one (IPv4-mapped IPv6 addresses as their IPv4).
pub fn kind_of(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(ip) => kind_of_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => kind_of_v4(mapped),
            None => kind_of_v6(ip),
        },
    }
}

const METADATA_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(169, 254, 170, 2)];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn kind_of_v4(ip: Ipv4Addr) -> Option<Refused> {
    if METADATA_V4.contains(&ip) {
        Some(Refused::Metadata)
    } else if ip.is_loopback() {
        Some(Refused::Loopback)
    } else if ip.is_link_local() {
        Some(Refused::LinkLocal)
    } else if ip.octets()[0] == 0 {
        // 0.0.0.0/8, "this network": Linux connects 0.0.0.0 to the local host.
        Some(Refused::Unspecified)
    } else {
        None
    }
}

fn kind_of_v6(ip: Ipv6Addr) -> Option<Refused> {
    if ip == METADATA_V6 {
        Some(Refused::Metadata)
    } else if ip.is_loopback() {
        Some(Refused::Loopback)
    } else if ip.is_unspecified() {
        Some(Refused::Unspecified)
    } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
        Some(Refused::LinkLocal)
    } else {
        None
    }
}

/// Why `ip` may not be called under `endpoints`, if it may not.
pub fn refused(ip: IpAddr, endpoints: Endpoints) -> Option<Refused> {
    kind_of(ip).filter(|kind| !endpoints.admits(*kind))
}

/// What a URL's host is, as far as the URL alone tells: a literal address (the URL parser has
/// already read `2130706433` or `0x7f.1` as `127.0.0.1`, as the client will), `localhost` or a
/// name under `.localhost` (which resolvers answer with loopback addresses), or a name.
fn host_kind(url: &Url) -> Option<Refused> {
    let host = url.host_str()?;
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match literal.parse::<IpAddr>() {
        Ok(ip) => kind_of(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost")).then_some(Refused::Loopback)
        }
    }
}

/// Whether a URL's host is this machine (a loopback address, `localhost`).
pub fn is_loopback_host(url: &Url) -> bool {
    host_kind(url) == Some(Refused::Loopback)
}

/// Why the host of `url` may not be called under `endpoints`, as far as the URL alone tells (its
/// literal address, `localhost`); names are checked again when resolved ([`Guarded`]).
pub fn refused_host(url: &Url, endpoints: Endpoints) -> Option<Refused> {
    host_kind(url).filter(|kind| !endpoints.admits(*kind))
}

/// The addresses a name resolved to that may be called; an error naming what was dropped when
/// none is left.
pub fn admitted(
    name: &str,
    addresses: impl IntoIterator<Item = SocketAddr>,
    endpoints: Endpoints,
) -> Result<Vec<SocketAddr>, NoAddress> {
    let mut dropped = None;
    let kept: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|address| match refused(address.ip(), endpoints) {
            Some(kind) => {
                dropped.get_or_insert(kind);
                false
            }
            None => true,
        })
        .collect();
    match (kept.is_empty(), dropped) {
        (true, Some(kind)) => Err(NoAddress { name: name.to_owned(), refused: kind }),
        _ => Ok(kept),
    }
}

/// A name that resolved only to addresses Conveyor does not call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} resolves to {refused}, which Conveyor does not call")]
pub struct NoAddress {
    pub name: String,
    pub refused: Refused,
}

/// The system resolver (`getaddrinfo`, through tokio), without the addresses [`refused`] names.
#[derive(Debug, Clone, Copy)]
pub struct Guarded {
    pub endpoints: Endpoints,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let endpoints = self.endpoints;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let kept = admitted(&name, resolved, endpoints)?;
            let addresses: Addrs = Box::new(kept.into_iter());
            Ok(addresses)
        })
    }
}

/// One connection pool, shared by whoever holds a clone.
#[derive(Clone, Default)]
pub struct Web {
    endpoints: Endpoints,
    client: Arc<OnceLock<Result<reqwest::Client, Unavailable>>>,
}

/// The HTTP client could not be built (no TLS roots, say): nothing is called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the HTTP client could not be built: {0}")]
pub struct Unavailable(String);

impl Web {
    /// A client that calls only what `endpoints` admits.
    pub fn new(endpoints: Endpoints) -> Self {
        Web { endpoints, client: Arc::default() }
    }

    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    /// The client: no redirects, no proxy, names resolved by [`Guarded`].
    pub fn client(&self) -> Result<&reqwest::Client, Unavailable> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .dns_resolver(Guarded { endpoints: self.endpoints })
                    .build()
                    .map_err(|e| Unavailable(crate::aws::source_chain(&e)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_unspecified_and_metadata_addresses_are_refused() {
        for (address, kind) in [
            ("127.0.0.1", Refused::Loopback),
            ("127.255.0.9", Refused::Loopback),
            ("::1", Refused::Loopback),
            ("::ffff:127.0.0.1", Refused::Loopback),
            ("169.254.1.1", Refused::LinkLocal),
            ("fe80::1", Refused::LinkLocal),
            ("febf::1", Refused::LinkLocal),
            ("0.0.0.0", Refused::Unspecified),
            ("0.1.2.3", Refused::Unspecified),
            ("::", Refused::Unspecified),
            ("169.254.169.254", Refused::Metadata),
            ("::ffff:169.254.169.254", Refused::Metadata),
            ("169.254.170.2", Refused::Metadata),
            ("fd00:ec2::254", Refused::Metadata),
        ] {
            assert_eq!(kind_of(ip(address)), Some(kind), "{address}");
            assert_eq!(refused(ip(address), Endpoints::Public), Some(kind), "{address}");
        }
        for public in
            ["10.0.0.1", "172.16.5.4", "192.168.1.1", "93.184.216.34", "2001:db8::1", "fd00:ec2::253", "fec0::1"]
        {
            assert_eq!(refused(ip(public), Endpoints::Public), None, "{public}");
        }
    }

    #[test]
    fn local_endpoints_admit_loopback_only() {
        assert_eq!(refused(ip("127.0.0.1"), Endpoints::Local), None);
        assert_eq!(refused(ip("::1"), Endpoints::Local), None);
        for address in ["169.254.169.254", "169.254.170.2", "169.254.1.1", "0.0.0.0", "fd00:ec2::254"] {
            assert!(refused(ip(address), Endpoints::Local).is_some(), "{address}");
        }
    }

    #[test]
    fn hosts_are_judged_as_the_client_will_read_them() {
        let judged = |url: &str, endpoints| refused_host(&Url::parse(url).unwrap(), endpoints);
        for url in [
            "https://127.0.0.1/health",
            "https://2130706433/", // 127.0.0.1 as one number
            "https://0x7f.1/",     // and in hex
            "https://[::1]:8443/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
        ] {
            assert_eq!(judged(url, Endpoints::Public), Some(Refused::Loopback), "{url}");
            assert_eq!(judged(url, Endpoints::Local), None, "{url}");
        }
        assert_eq!(judged("http://169.254.169.254/latest/meta-data/", Endpoints::Local), Some(Refused::Metadata));
        assert_eq!(judged("http://[fd00:ec2::254]/", Endpoints::Public), Some(Refused::Metadata));
        assert_eq!(judged("https://0.0.0.0:8080/", Endpoints::Public), Some(Refused::Unspecified));
        assert_eq!(judged("https://shop.example.com/health", Endpoints::Public), None);
        assert_eq!(judged("https://localhost.example.com/", Endpoints::Public), None);
    }

    #[test]
    fn the_resolver_drops_refused_addresses_and_fails_when_none_is_left() {
        let at = |text: &str| SocketAddr::new(ip(text), 0);
        // DNS rebinding: a public name answering with the metadata address.
        let error = admitted("evil.example", [at("169.254.169.254")], Endpoints::Public).unwrap_err();
        assert_eq!(error.refused, Refused::Metadata);
        assert!(error.to_string().contains("evil.example"), "{error}");
        assert_eq!(
            admitted("mixed.example", [at("127.0.0.1"), at("93.184.216.34")], Endpoints::Public).unwrap(),
            [at("93.184.216.34")]
        );
        assert_eq!(admitted("localhost", [at("127.0.0.1")], Endpoints::Local).unwrap(), [at("127.0.0.1")]);
        assert!(admitted("localhost", [at("127.0.0.1"), at("::1")], Endpoints::Public).is_err());
        assert_eq!(admitted("nothing.example", [], Endpoints::Public).unwrap(), []);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_not_called() {
        let resolved = |endpoints| async move {
            let name: Name = "localhost".parse().unwrap();
            Guarded { endpoints }.resolve(name).await.map(|addrs| addrs.count())
        };
        let refused = resolved(Endpoints::Public).await.unwrap_err();
        assert!(refused.to_string().contains("loopback"), "{refused}");
        assert!(resolved(Endpoints::Local).await.unwrap() > 0);
    }

    #[test]
    fn the_template_never_switches_local_endpoints_on() {
        for template in [include_str!("../infra/template.yaml"), include_str!("../infra/target-account.yaml")] {
            assert!(!template.contains(LOCAL_ENDPOINTS_VARIABLE));
        }
    }

    #[test]
    fn the_local_switch_is_1_or_unset() {
        assert_eq!(Endpoints::from_variable(None), Ok(Endpoints::Public));
        assert_eq!(Endpoints::from_variable(Some("")), Ok(Endpoints::Public));
        assert_eq!(Endpoints::from_variable(Some("0")), Ok(Endpoints::Public));
        assert_eq!(Endpoints::from_variable(Some("1")), Ok(Endpoints::Local));
        assert_eq!(Endpoints::from_variable(Some("true")), Ok(Endpoints::Local));
        let error = Endpoints::from_variable(Some("yes")).unwrap_err();
        assert!(error.contains(LOCAL_ENDPOINTS_VARIABLE), "{error}");
    }
}
