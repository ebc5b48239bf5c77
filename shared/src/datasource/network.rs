//! Where datasources may connect: a deny-list (`JET_DATASOURCE_DENY_HOSTS`) checked against
//! every address a datasource's host resolves to, so a tenant cannot point a datasource at the
//! platform's own database, services listening on the machine's loopback, or cloud metadata
//! endpoints on link-local addresses.
//!
//! The drivers check the resolved addresses, not the name, and connect to what they checked
//! (PostgreSQL pins the address; HTTP resolves through [`DenyList::check_host`] for every
//! connection, redirects included), so a DNS name pointing at `127.0.0.1` is denied too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// One entry of `JET_DATASOURCE_DENY_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyEntry {
    /// `loopback`: 127.0.0.0/8, ::1, and the unspecified 0.0.0.0/8 and :: (which reach the
    /// local machine too); also Unix socket paths.
    Loopback,
    /// `link-local`: 169.254.0.0/16 (cloud metadata at 169.254.169.254) and fe80::/10.
    LinkLocal,
    /// `platform-db`: the host of `DATABASE_URL`.
    PlatformDb,
    /// An address or network: `10.0.0.0/8`, `192.168.1.10`, `fd00::/8`.
    Net(IpAddr, u8),
    /// A host name: denied by name and by every address it resolved to at startup.
    Host(String),
}

/// The entries used when `JET_DATASOURCE_DENY_HOSTS` is unset.
pub const DEFAULT_DENY: &[DenyEntry] = &[
    DenyEntry::Loopback,
    DenyEntry::LinkLocal,
    DenyEntry::PlatformDb,
];

impl DenyEntry {
    /// Parses one entry; the message says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let entry = raw.trim();
        match entry.to_ascii_lowercase().as_str() {
            "loopback" => return Ok(Self::Loopback),
            "link-local" => return Ok(Self::LinkLocal),
            "platform-db" => return Ok(Self::PlatformDb),
            _ => {}
        }
        if let Some((addr, prefix)) = entry.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{entry}`: not an address/prefix"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{entry}`: the prefix must be 0..{max}"))?;
            return Ok(Self::Net(canonical(addr), prefix));
        }
        if let Ok(addr) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
            let addr = canonical(addr);
            return Ok(Self::Net(addr, if addr.is_ipv4() { 32 } else { 128 }));
        }
        let valid_name = !entry.is_empty()
            && entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid_name {
            return Err(format!(
                "`{entry}`: expected loopback, link-local, platform-db, an address, a network (a.b.c.d/n) or a host name"
            ));
        }
        Ok(Self::Host(entry.trim_end_matches('.').to_ascii_lowercase()))
    }
}

/// Why a datasource may not connect where it points.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostDenied(pub String);

/// The deny-list in force, with names and `platform-db` resolved once at startup.
#[derive(Debug, Clone, Default)]
pub struct DenyList {
    nets: Vec<(IpAddr, u8)>,
    names: Vec<String>,
    sockets_denied: bool,
}

impl DenyList {
    /// Nothing is denied (`JET_DATASOURCE_DENY_HOSTS=none`).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// The list for `entries`, with `platform-db` standing for the host of `database_url`.
    /// Host names are resolved now (blocking: this runs once at startup); a name that does
    /// not resolve is still denied by name.
    pub fn new(entries: &[DenyEntry], database_url: Option<&str>) -> Self {
        let mut list = Self::default();
        for entry in entries {
            match entry {
                DenyEntry::Loopback => {
                    list.sockets_denied = true;
                    list.nets.extend([
                        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8),
                        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
                        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
                    ]);
                }
                DenyEntry::LinkLocal => list.nets.extend([
                    (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
                    (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
                ]),
                DenyEntry::PlatformDb => {
                    if let Some(host) = database_url.and_then(database_host) {
                        list.add_host(&host);
                    }
                }
                DenyEntry::Net(addr, prefix) => list.nets.push((*addr, *prefix)),
                DenyEntry::Host(name) => list.add_host(name),
            }
        }
        list
    }

    fn add_host(&mut self, host: &str) {
        if host.starts_with('/') {
            self.sockets_denied = true;
            return;
        }
        if let Ok(addr) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            let addr = canonical(addr);
            self.nets
                .push((addr, if addr.is_ipv4() { 32 } else { 128 }));
            return;
        }
        self.names
            .push(host.trim_end_matches('.').to_ascii_lowercase());
        match (host, 0).to_socket_addrs() {
            Ok(addrs) => self.nets.extend(addrs.map(|a| {
                let ip = canonical(a.ip());
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            })),
            Err(err) => {
                tracing::warn!(host, error = %err, "deny-list host does not resolve; denied by name only")
            }
        }
    }

    /// Whether nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.names.is_empty() && !self.sockets_denied
    }

    /// Whether connecting to `ip` is denied.
    pub fn denies_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|(net, prefix)| in_network(ip, *net, *prefix))
    }

    /// `Err` when `host` itself (a denied name, a denied address literal, a Unix socket path)
    /// is denied, before any resolution.
    pub fn check_name(&self, host: &str) -> Result<(), HostDenied> {
        let denied = if host.starts_with('/') {
            self.sockets_denied
        } else if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            self.denies_ip(ip)
        } else {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            self.names.contains(&name)
        };
        if denied {
            return Err(denied_message(host));
        }
        Ok(())
    }

    /// Resolves `host` and returns its addresses (with `port`), or `Err` if the host or any
    /// of its addresses is denied. One denied address denies the host: a name that resolves
    /// to a public and a loopback address could otherwise be connected to either.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, CheckError> {
        self.check_name(host).map_err(CheckError::Denied)?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| CheckError::Unresolved(format!("cannot resolve `{host}`: {e}")))?
            .collect();
        if addrs.iter().any(|a| self.denies_ip(a.ip())) {
            return Err(CheckError::Denied(denied_message(host)));
        }
        if addrs.is_empty() {
            return Err(CheckError::Unresolved(format!("`{host}` has no address")));
        }
        Ok(addrs)
    }
}

/// Why [`DenyList::check_host`] refused a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The host or one of its addresses is on the deny-list.
    #[error(transparent)]
    Denied(HostDenied),
    /// The name does not resolve.
    #[error("{0}")]
    Unresolved(String),
}

fn denied_message(host: &str) -> HostDenied {
    HostDenied(format!(
        "`{host}` is not a place datasources may connect to on this server (JET_DATASOURCE_DENY_HOSTS)"
    ))
}

/// The host of a PostgreSQL URL (`postgres://user:pw@host:port/db`), or the socket directory
/// of `?host=/path`.
fn database_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let socket = parsed
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    socket.or_else(|| parsed.host_str().map(str::to_owned))
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str], db: Option<&str>) -> DenyList {
        let parsed: Vec<DenyEntry> = entries
            .iter()
            .map(|e| DenyEntry::parse(e).expect("valid entry"))
            .collect();
        DenyList::new(&parsed, db)
    }

    #[test]
    fn defaults_deny_loopback_link_local_and_the_platform_database() {
        let deny = DenyList::new(DEFAULT_DENY, Some("postgres://u:p@10.1.2.3:5432/jet"));
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "10.1.2.3",
        ] {
            assert!(deny.denies_ip(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.1.2.4", "93.184.216.34", "2001:db8::1"] {
            assert!(!deny.denies_ip(ip.parse().expect("ip")), "{ip}");
        }
        assert!(deny.check_name("/var/run/postgresql").is_err());
        assert!(deny.check_name("[::1]").is_err());
        assert!(DenyList::allow_all().is_empty());
    }

    #[test]
    fn entries_parse_as_networks_addresses_and_names() {
        let deny = list(&["10.0.0.0/8", "192.168.1.10", "Metadata.Internal."], None);
        assert!(deny.denies_ip("10.200.0.1".parse().expect("ip")));
        assert!(deny.denies_ip("192.168.1.10".parse().expect("ip")));
        assert!(!deny.denies_ip("192.168.1.11".parse().expect("ip")));
        assert!(deny.check_name("metadata.internal").is_err());
        assert!(DenyEntry::parse("10.0.0.0/33").is_err());
        assert!(DenyEntry::parse("http://x").is_err());
    }

    #[tokio::test]
    async fn names_are_checked_by_what_they_resolve_to() {
        let deny = list(&["loopback"], None);
        assert!(matches!(
            deny.check_host("localhost", 5432).await,
            Err(CheckError::Denied(_))
        ));
        let open = DenyList::allow_all();
        let addrs = open.check_host("localhost", 5432).await.expect("resolves");
        assert!(addrs.iter().all(|a| a.port() == 5432));
    }
}
