//! One resolution of a `[pool.NAME.discover]` name through `hickory-resolver`: the backends it
//! names (id `IP:PORT`, DESIGN.md §22), the shortest TTL of the records, or why there are none.
//!
//! Owns the resolver's settings and the mapping of records to backends. Must not touch the
//! snapshot or the registry: it returns an answer and the caller applies it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, Protocol, ResolverConfig, ResolverOpts,
};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioAsyncResolver;

use crate::config::{BackendConf, BackendSource, DiscoverName, DiscoverOpts};

/// How long one query waits for a name server, and how many times it is sent.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 2;

/// The backends of one answer, in address order, and the shortest record TTL.
#[derive(Debug, Clone)]
pub struct Answer {
    pub backends: Vec<BackendConf>,
    pub ttl: Option<Duration>,
}

/// Why an answer has no backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Timeout, SERVFAIL, NXDOMAIN, refused, no name server…
    Error(String),
    /// The name exists and has no records of the type asked (or SRV targets without addresses).
    Empty(String),
}

impl Failure {
    /// The `result` label of `tether_discovery_resolutions_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Failure::Error(_) => "error",
            Failure::Empty(_) => "empty",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Error(m) | Failure::Empty(m) => m,
        }
    }
}

/// A resolver asking `servers` (none: the system's, from `/etc/resolv.conf`, with its search
/// domains and `/etc/hosts`). No cache: every resolution asks the name servers, so `interval`
/// means what it says; A and AAAA are both asked for.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioAsyncResolver, String> {
    let (config, mut opts) = if servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for &addr in servers {
            config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            // A truncated answer (many backends) is asked again over TCP.
            config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = false;
        (config, opts)
    };
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = ATTEMPTS;
    Ok(TokioAsyncResolver::tokio(config, opts))
}

/// Resolves `opts.name` once.
pub async fn resolve(r: &TokioAsyncResolver, opts: &DiscoverOpts) -> Result<Answer, Failure> {
    match &opts.name {
        DiscoverName::Dns { host, port } => {
            let (ips, ttl) = addresses(r, host).await?;
            let backends = ips
                .into_iter()
                .map(|ip| backend(SocketAddr::new(ip, *port), opts.weight, 0))
                .collect();
            Ok(Answer { backends, ttl })
        }
        DiscoverName::Srv(name) => srv(r, name).await,
    }
}

async fn srv(r: &TokioAsyncResolver, name: &str) -> Result<Answer, Failure> {
    let found = r
        .srv_lookup(name)
        .await
        .map_err(|e| failure(name, "SRV", &e))?;
    let mut ttl = min_ttl(found.as_lookup());
    // (priority, weight, port, target); a target of "." says the service is not offered there.
    let records: Vec<(u16, u16, u16, String)> = found
        .iter()
        .filter(|s| !s.target().is_root())
        .map(|s| (s.priority(), s.weight(), s.port(), s.target().to_ascii()))
        .collect();
    if records.is_empty() {
        return Err(Failure::Empty(format!(
            "{name}: no SRV records with a target"
        )));
    }
    // Each target once, concurrently.
    let mut targets: Vec<String> = records.iter().map(|r| r.3.clone()).collect();
    targets.sort();
    targets.dedup();
    let mut set = tokio::task::JoinSet::new();
    for t in targets {
        let r = r.clone();
        set.spawn(async move {
            let found = addresses(&r, &t).await;
            (t, found)
        });
    }
    let mut ips: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        let Ok((t, found)) = joined else { continue };
        match found {
            Ok((v, t_ttl)) => {
                ttl = shorter(ttl, t_ttl);
                ips.insert(t, v);
            }
            Err(f) => errors.push(f),
        }
    }
    // SRV weights are relative within a priority; tether's are 1..=256. A group whose largest
    // weight exceeds 256 is scaled down in proportion; weight 0 ("rarely") becomes 1.
    let mut largest: BTreeMap<u16, u16> = BTreeMap::new();
    for &(p, w, _, _) in &records {
        let e = largest.entry(p).or_default();
        *e = (*e).max(w);
    }
    let mut by_addr: BTreeMap<SocketAddr, BackendConf> = BTreeMap::new();
    for (p, w, port, target) in &records {
        let weight = srv_weight(*w, largest[p]);
        for ip in ips.get(target).into_iter().flatten() {
            let b = backend(SocketAddr::new(*ip, *port), weight, *p);
            // One address named twice: its most preferred (lowest priority, then heaviest) record.
            match by_addr.get(&b.addr) {
                Some(old)
                    if (old.priority, u32::MAX - old.weight)
                        <= (b.priority, u32::MAX - b.weight) => {}
                _ => {
                    by_addr.insert(b.addr, b);
                }
            }
        }
    }
    if by_addr.is_empty() {
        // Every target failed: the first failure says why (an error wins over "empty").
        errors.sort_by_key(|f| matches!(f, Failure::Empty(_)));
        return Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| Failure::Empty(format!("{name}: SRV targets have no addresses"))));
    }
    Ok(Answer {
        backends: by_addr.into_values().collect(),
        ttl,
    })
}

/// The A and AAAA addresses of `host` (sorted, each once) and their shortest TTL.
async fn addresses(
    r: &TokioAsyncResolver,
    host: &str,
) -> Result<(Vec<IpAddr>, Option<Duration>), Failure> {
    let found = r
        .lookup_ip(host)
        .await
        .map_err(|e| failure(host, "A/AAAA", &e))?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(Failure::Empty(format!("{host}: no A or AAAA records")));
    }
    Ok((ips, min_ttl(found.as_lookup())))
}

/// An SRV weight as tether's (1..=256): scaled in proportion when its group's largest weight is
/// above 256; 0 ("rarely") is 1.
fn srv_weight(w: u16, largest: u16) -> u32 {
    let (w, max) = (u32::from(w), u32::from(largest));
    if max > 256 {
        (w * 256).div_ceil(max)
    } else {
        w
    }
    .clamp(1, 256)
}

fn backend(addr: SocketAddr, weight: u32, priority: u16) -> BackendConf {
    BackendConf {
        id: addr.to_string(),
        addr,
        weight,
        source: BackendSource::Dns,
        priority,
    }
}

fn min_ttl(l: &hickory_resolver::lookup::Lookup) -> Option<Duration> {
    l.records()
        .iter()
        .map(|r| Duration::from_secs(u64::from(r.ttl())))
        .min()
}

fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn failure(name: &str, kind: &str, e: &ResolveError) -> Failure {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NoError => Failure::Empty(format!("{name}: no {kind} records")),
            ResponseCode::NXDomain => Failure::Error(format!("{name}: NXDOMAIN (no such name)")),
            code => Failure::Error(format!("{name}: {code}")),
        },
        ResolveErrorKind::Timeout => Failure::Error(format!("{name}: timed out")),
        _ => Failure::Error(format!("{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_weights_map_to_tethers_range() {
        assert_eq!(srv_weight(10, 30), 10);
        assert_eq!(srv_weight(256, 256), 256);
        assert_eq!(srv_weight(0, 30), 1);
        // A group up to 65535 keeps its proportions.
        assert_eq!(srv_weight(65535, 65535), 256);
        assert_eq!(srv_weight(32768, 65535), 129);
        assert_eq!(srv_weight(1000, 4000), 64);
        assert_eq!(srv_weight(1, 4000), 1);
    }

    #[test]
    fn next_resolution_follows_the_ttl_within_bounds() {
        let opts = DiscoverOpts {
            name: DiscoverName::Srv("_x._tcp.a".into()),
            interval: Duration::from_secs(5),
            resolvers: Vec::new(),
            weight: 1,
        };
        let next = crate::control::discover::next_after;
        assert_eq!(next(&opts, None), Duration::from_secs(5));
        assert_eq!(
            next(&opts, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            next(&opts, Some(Duration::from_secs(300))),
            Duration::from_secs(5)
        );
        assert_eq!(next(&opts, Some(Duration::ZERO)), Duration::from_secs(1));
    }
}
