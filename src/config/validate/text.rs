//! Value checks (pure): addresses, log levels, paths, host patterns, key specs, names.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::{content_hash, HostMatch, KeySpec};

pub(super) const EXAMPLE_ADDR: &str = "must be an IP address and port, e.g. 10.0.0.11:8080";

/// What an address is for: a listener may take port 0 (an ephemeral port), a backend not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AddrUse {
    /// A listener: port 0 (an ephemeral port) is allowed.
    Listen,
    Backend,
}

pub(super) const KEY_SPECS: &str =
    "cookie:NAME, header:NAME, query:NAME, jwt:CLAIM, source_ip or path";

/// `ip:port` literals only: no DNS at config time, and Pingora's `HttpPeer::new` panics on an
/// address that does not resolve.
pub(super) fn parse_addr(text: &str, usage: AddrUse) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 && usage == AddrUse::Backend {
            return Err("port 0 is not a valid backend port".into());
        }
        return Ok(addr);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (rest, None),
        }
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) if !text.starts_with('[') => {
            Err("missing port; write IPv6 addresses in brackets, e.g. [::1]:8080".into())
        }
        Ok(_) => match port {
            None | Some("") => Err("missing port".into()),
            Some(p) if p.parse::<u16>().is_err() => {
                Err(format!("invalid port {p:?}; must be 1 to 65535"))
            }
            Some(_) => Err(EXAMPLE_ADDR.into()),
        },
        Err(_) if host.is_empty() && port.is_some() => Err(format!(
            "missing IP address; {EXAMPLE_ADDR} (0.0.0.0:PORT listens on every interface)"
        )),
        Err(_) => Err(EXAMPLE_ADDR.into()),
    }
}

/// `info`, `tether=debug,info`, ... A bare word that is not a level parses as "everything
/// from target WORD" — almost always a typo (`debg`), so it is refused.
pub(super) fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty, e.g. \"info\" or \"tether=debug,info\"".into());
    }
    // tracing-subscriber's directive parser panics on some non-ASCII input (found by the config
    // fuzzer: a U+2004 space before a directive); filters are ASCII anyway.
    if !level.is_ascii() {
        return Err("must be ASCII, e.g. \"info\" or \"tether=debug,info\"".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("invalid log filter: {e}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare
            && directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
        {
            return Err(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error or off); \
                 for a target write \"{directive}=debug\""
            ));
        }
    }
    Ok(())
}

pub(super) fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with \"/\"".into());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

pub(super) fn host_match(host: &str) -> Result<HostMatch, String> {
    let h = host.to_ascii_lowercase();
    if h.is_empty() || h == "*" {
        return Err("omit host to match any host".into());
    }
    let (wildcard, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h.as_str()),
    };
    if name.contains('*') {
        return Err(
            "a wildcard is only allowed as the whole first label, e.g. \"*.example.com\"".into(),
        );
    }
    if name.contains(':') {
        return Err("must be a host name without a port".into());
    }
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !ok {
        return Err("must be a host name such as \"shop.example.com\" or \"*.example.com\"".into());
    }
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

pub(super) fn key_spec(text: &str) -> Result<KeySpec, String> {
    match text {
        "source_ip" => return Ok(KeySpec::SourceIp),
        "path" => return Ok(KeySpec::Path),
        _ => {}
    }
    let Some((kind, name)) = text.split_once(':') else {
        return Err(format!("must be {KEY_SPECS}"));
    };
    let valid = match kind {
        "cookie" | "header" => is_token(name),
        "jwt" => !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control()),
        "query" => {
            !name.is_empty()
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "&=#?".contains(c))
        }
        _ => return Err(format!("must be {KEY_SPECS}")),
    };
    if name.is_empty() {
        return Err(format!("missing the {kind} name after \"{kind}:\""));
    }
    if !valid {
        return Err(format!("{name:?} is not a valid {kind} name"));
    }
    Ok(match kind {
        "cookie" => KeySpec::Cookie(name.to_owned()),
        "header" => KeySpec::Header(name.to_ascii_lowercase()),
        "jwt" => KeySpec::Jwt(name.to_owned()),
        _ => KeySpec::Query(name.to_owned()),
    })
}

/// An HTTP token (RFC 9110 `tchar`), which is also what a cookie name must be.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(super) fn is_pool_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn is_backend_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

/// In `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=`; the first one if several),
/// which belongs to this one unit: plain `tether.pid` / `tether.sock`, so the unit's `PIDFile=`
/// can name it. Otherwise the shared temp dir, with a name unique per config file so two
/// instances with different configs never share a pid file or upgrade socket.
pub(super) fn default_runtime_path(source: Option<&Path>, ext: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return dir.join(format!("tether.{ext}"));
    }
    let hash = match source {
        Some(p) => {
            let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            content_hash(canonical.as_os_str().as_encoded_bytes())
        }
        None => content_hash(b"inline"),
    };
    std::env::temp_dir().join(format!("tether-{}.{ext}", &hash[..12]))
}
