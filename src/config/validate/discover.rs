//! `[pool.NAME.discover]` (DESIGN.md §22): what to resolve (`dns = "HOST:PORT"` or
//! `srv = "_SERVICE._PROTO.NAME"`), how often, through which name servers, with what weight.
//! Only the text is checked here: whether the name resolves is `tether check`'s warning, never an
//! error (a name may not exist yet when the config is written).

use super::*;

impl Cx<'_> {
    pub(super) fn discover(&mut self, kp: &KeyPath, d: &file::Discover) -> Option<DiscoverOpts> {
        let name = match (d.dns.as_deref(), d.srv.as_deref()) {
            (Some(_), Some(_)) => {
                self.error(
                    &kp.key("srv"),
                    None,
                    "set dns (A/AAAA records, \"HOST:PORT\") or srv (SRV records), not both",
                );
                None
            }
            (None, None) => {
                self.missing(
                    &kp.key("dns"),
                    "missing required key: dns = \"HOST:PORT\" (A/AAAA records) or srv = \"_SERVICE._PROTO.NAME\" (SRV records)",
                );
                None
            }
            (Some(text), None) => self.checked(&kp.key("dns"), text, dns_target(text)),
            (None, Some(text)) => self
                .checked(&kp.key("srv"), text, dns_name(text))
                .map(DiscoverName::Srv),
        };
        let interval = self.duration(
            &kp.key("interval"),
            d.interval.as_ref(),
            Duration::from_secs(5),
            true,
        );
        if interval < DiscoverOpts::MIN_INTERVAL {
            let value = match d.interval.as_ref() {
                Some(RawDuration::Text(t)) => quoted(t),
                _ => None,
            };
            self.error(&kp.key("interval"), value, "must be at least 1s");
        }
        let mut resolvers = Vec::new();
        for (i, text) in d.resolvers.iter().flatten().enumerate() {
            let rkp = kp.key("resolvers").index(i);
            if let Some(a) = self.checked(&rkp, text, name_server(text)) {
                resolvers.push(a);
            }
        }
        if d.resolvers.as_ref().is_some_and(Vec::is_empty) {
            self.error(
                &kp.key("resolvers"),
                Some("[]".into()),
                "must not be empty; omit it to use the system's name servers (/etc/resolv.conf)",
            );
        }
        let weight = self.int(&kp.key("weight"), d.weight, 1u32, 1..=256);
        if d.weight.is_some() && d.srv.is_some() {
            self.error(
                &kp.key("weight"),
                d.weight.map(|w| w.to_string()),
                "is for dns (A/AAAA) answers: SRV records carry their own weight",
            );
        }
        Some(DiscoverOpts {
            name: name?,
            interval,
            resolvers,
            weight,
        })
    }
}

/// `HOST:PORT` (`[V6]:PORT` for an IPv6 literal): a DNS name (or an address) and a port.
pub(super) fn dns_target(text: &str) -> Result<DiscoverName, String> {
    const FORM: &str = "must be HOST:PORT, e.g. \"app.internal:8080\"";
    let (host, port) = text.rsplit_once(':').ok_or_else(|| FORM.to_owned())?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{FORM}: the port must be 1 to 65535"))?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{FORM}: [{v6}] is not an IPv6 address"))?;
            v6.to_owned()
        }
        None => dns_name(host)?,
    };
    Ok(DiscoverName::Dns { host, port })
}

/// A DNS name (labels of letters, digits, '-' and '_', dot-separated, optionally fully
/// qualified with a final dot), lower-cased.
pub(super) fn dns_name(text: &str) -> Result<String, String> {
    let bare = text.strip_suffix('.').unwrap_or(text);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(
            "must be a DNS name such as \"app.internal\" (labels of letters, digits, '-' and '_')"
                .into(),
        )
    }
}

/// A name server: `IP:PORT`, or `IP` for port 53.
fn name_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| "must be a name server's IP:PORT, e.g. \"10.0.0.2:53\"".into())
}
