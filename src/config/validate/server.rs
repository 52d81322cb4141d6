//! `[server]` (listeners, TLS certificates, runtime paths), `[log]` and `[affinity]`.

use super::*;

impl Cx<'_> {
    pub(super) fn server(&mut self, s: &file::Server, source: Option<&Path>) -> Server {
        let p = KeyPath::root().key("server");
        let mut listeners: Vec<Listener> = Vec::new();

        let mut listen = Vec::new();
        for (i, text) in s.listen.iter().flatten().enumerate() {
            let kp = p.key("listen").index(i);
            if let Some(addr) = self.addr(&kp, text, AddrUse::Listen) {
                self.add_listener(&mut listeners, addr, kp, true, Some(text));
                listen.push(addr);
            }
        }

        let mut tls = Vec::new();
        for (i, t) in s.tls.iter().flatten().enumerate() {
            let kp = p.key("tls").index(i);
            if let Some(l) = self.tls(&kp, t, &mut listeners) {
                tls.push(l);
            }
        }

        let no_listen = s.listen.as_ref().is_none_or(Vec::is_empty);
        let no_tls = s.tls.as_ref().is_none_or(Vec::is_empty);
        if no_listen && no_tls {
            self.missing(
                &p.key("listen"),
                "no listener: set server.listen = [\"0.0.0.0:8080\"] or add a [[server.tls]]",
            );
        }

        let threads = self.int(&p.key("threads"), s.threads, 2usize, 1..=256);
        let threads = NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN);

        let admin_path = p.key("admin");
        let admin = match s.admin.as_deref() {
            None => {
                self.add_listener(
                    &mut listeners,
                    DEFAULT_ADMIN,
                    admin_path.clone(),
                    false,
                    None,
                );
                Some(DEFAULT_ADMIN)
            }
            Some("off") => None,
            Some(text) => {
                let addr = self.addr(&admin_path, text, AddrUse::Listen);
                if let Some(a) = addr {
                    self.add_listener(&mut listeners, a, admin_path.clone(), true, Some(text));
                    if !a.ip().to_canonical().is_loopback() && s.admin_token_file.is_none() {
                        self.error(
                            &admin_path,
                            quoted(text),
                            "admin listener off loopback requires admin_token_file",
                        );
                    }
                }
                addr
            }
        };

        let admin_token = s.admin_token_file.as_deref().and_then(|f| {
            let kp = p.key("admin_token_file");
            let (file, bytes) = self.read_file(&kp, f)?;
            let token = match String::from_utf8(bytes) {
                Ok(t) => t.trim().to_owned(),
                Err(_) => {
                    self.error(
                        &kp,
                        quoted(f),
                        format!("{} is not UTF-8 text", file.display()),
                    );
                    return None;
                }
            };
            if token.is_empty() {
                self.error(&kp, quoted(f), format!("{} is empty", file.display()));
                return None;
            }
            Some(token)
        });

        let grace_period = self.duration(
            &p.key("grace_period"),
            s.grace_period.as_ref(),
            Duration::from_secs(30),
            false,
        );

        let pid_file = self.runtime_path(&p.key("pid_file"), s.pid_file.as_deref(), source, "pid");
        let upgrade_sock = self.runtime_path(
            &p.key("upgrade_sock"),
            s.upgrade_sock.as_deref(),
            source,
            "sock",
        );

        if s.engine.is_some() {
            // Checked for a typo, then ignored: one engine serves both protocols (§20).
            let _: Engine = self.named(&p.key("engine"), s.engine.as_deref(), Engine::Fast);
            self.warning(
                &p.key("engine"),
                s.engine.as_deref().and_then(quoted),
                crate::config::ENGINE_DEPRECATED,
            );
        }

        let d = Limits::default();
        let limits = Limits {
            header_timeout: self.duration(
                &p.key("header_timeout"),
                s.header_timeout.as_ref(),
                d.header_timeout,
                true,
            ),
            keepalive_timeout: self.duration(
                &p.key("keepalive_timeout"),
                s.keepalive_timeout.as_ref(),
                d.keepalive_timeout,
                true,
            ),
            max_header_size: self
                .size(
                    &p.key("max_header_size"),
                    s.max_header_size.as_ref(),
                    1024..=1024 * 1024,
                )
                .map_or(d.max_header_size, |n| n as usize),
            max_headers: self.int(&p.key("max_headers"), s.max_headers, 100usize, 1..=1000),
            max_concurrent_streams: self.int(
                &p.key("max_concurrent_streams"),
                s.max_concurrent_streams,
                d.max_concurrent_streams,
                1..=10_000,
            ),
        };

        let max_reload_move = s.max_reload_move.filter(|m| {
            let ok = m.is_finite() && (0.0..=1.0).contains(m);
            if !ok {
                self.error(
                    &p.key("max_reload_move"),
                    Some(m.to_string()),
                    "must be a share between 0 and 1 (e.g. 0.3: refuse a reload that moves more than 30% of a pool's sessions)",
                );
            }
            ok
        });

        Server {
            max_reload_move,
            limits,
            h2c: s.h2c.unwrap_or(false),
            listen,
            tls,
            threads,
            admin,
            admin_token,
            watch: s.watch.unwrap_or(false),
            grace_period,
            pid_file,
            upgrade_sock,
        }
    }

    /// Record a listener; a second listener on the same address (or on an address a wildcard
    /// of the same family already covers) is an error at the later one.
    pub(super) fn add_listener(
        &mut self,
        seen: &mut Vec<Listener>,
        addr: SocketAddr,
        path: KeyPath,
        explicit: bool,
        text: Option<&str>,
    ) {
        let clash = seen.iter().find(|l| {
            if l.addr.port() == 0 || addr.port() == 0 || l.addr.port() != addr.port() {
                return false;
            }
            let same_family = l.addr.is_ipv4() == addr.is_ipv4();
            l.addr == addr
                || (same_family && (l.addr.ip().is_unspecified() || addr.ip().is_unspecified()))
        });
        if let Some(first) = clash {
            let what = if first.addr == addr {
                "duplicate listen address"
            } else {
                "overlapping listen address"
            };
            let first_desc = match (first.explicit, self.line(&first.path)) {
                (true, Some(line)) => format!("{} = \"{}\" (line {line})", first.path, first.addr),
                (true, None) => format!("{} = \"{}\"", first.path, first.addr),
                (false, _) => format!("the default {} = \"{}\"", first.path, first.addr),
            };
            let message = if explicit {
                format!("{what}: also {first_desc}")
            } else {
                format!(
                    "{what}: the default admin address {addr} is also {first_desc}; \
                     set server.admin to another address or \"off\""
                )
            };
            self.error(&path, text.and_then(quoted), message);
        }
        seen.push(Listener {
            addr,
            path,
            explicit,
        });
    }

    pub(super) fn runtime_path(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        source: Option<&Path>,
        ext: &str,
    ) -> PathBuf {
        match value {
            Some("") => {
                self.error(path, quoted(""), "must not be empty");
                PathBuf::new()
            }
            Some(v) => self.resolve(v),
            None => default_runtime_path(source, ext),
        }
    }

    pub(super) fn tls(
        &mut self,
        kp: &KeyPath,
        t: &file::Tls,
        listeners: &mut Vec<Listener>,
    ) -> Option<TlsListener> {
        let what = "e.g. listen = \"0.0.0.0:8443\"";
        let listen = match self.required(&kp.key("listen"), t.listen.as_deref(), what) {
            None => None,
            Some(text) => {
                let path = kp.key("listen");
                let addr = self.addr(&path, text, AddrUse::Listen);
                if let Some(a) = addr {
                    self.add_listener(listeners, a, path, true, Some(text));
                }
                addr
            }
        };
        let mut certs = Vec::new();
        let mut certs_ok = true;
        match &t.certs {
            None => {
                self.missing(
                    &kp.key("certs"),
                    "missing required key, e.g. certs = [{ cert = \"site.pem\", key = \"site.key\" }]",
                );
                certs_ok = false;
            }
            Some(list) if list.is_empty() => {
                self.error(
                    &kp.key("certs"),
                    Some("[]".into()),
                    "needs at least one { cert, key }",
                );
                certs_ok = false;
            }
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    match self.cert_pair(&kp.key("certs").index(i), c) {
                        Some(pair) => certs.push(pair),
                        None => certs_ok = false,
                    }
                }
            }
        }
        let listen = listen?;
        certs_ok.then_some(TlsListener { listen, certs })
    }

    /// Read and parse a certificate chain and its key, and check that they belong together —
    /// what `TlsSettings::build()` would otherwise panic on at startup.
    pub(super) fn cert_pair(&mut self, kp: &KeyPath, c: &file::CertFiles) -> Option<CertPair> {
        let cert_kp = kp.key("cert");
        let key_kp = kp.key("key");
        let chain = self
            .required(
                &cert_kp,
                c.cert.as_deref(),
                "the PEM certificate chain file",
            )
            .and_then(|v| self.load_chain(&cert_kp, v));
        let key = self
            .required(&key_kp, c.key.as_deref(), "the PEM private key file")
            .and_then(|v| self.load_key(&key_kp, v));
        let ((cert_path, chain), (key_path, key)) = (chain?, key?);
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) =
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        {
            let message = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "private key {} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
                e => format!("cannot use private key {}: {e}", key_path.display()),
            };
            self.error(&key_kp, c.key.as_deref().and_then(quoted), message);
            return None;
        }
        Some(CertPair {
            cert_path,
            key_path,
            chain,
            key: Arc::new(key),
        })
    }

    pub(super) fn load_chain(
        &mut self,
        kp: &KeyPath,
        value: &str,
    ) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
        let (file, bytes) = self.read_file(kp, value)?;
        let chain = self.parse_chain(kp, value, &file, &bytes)?;
        Some((file, chain))
    }

    /// The PEM certificates in `bytes` (read from `file`, named by `value` at `kp`); an error
    /// when there are none or they do not parse.
    pub(super) fn parse_chain(
        &mut self,
        kp: &KeyPath,
        value: &str,
        file: &Path,
        bytes: &[u8],
    ) -> Option<Vec<CertificateDer<'static>>> {
        match rustls_pemfile::certs(&mut &*bytes).collect::<Result<Vec<_>, _>>() {
            Ok(chain) if chain.is_empty() => {
                self.error(
                    kp,
                    quoted(value),
                    format!(
                        "no certificate found in {} (expected PEM \"BEGIN CERTIFICATE\")",
                        file.display()
                    ),
                );
                None
            }
            Ok(chain) => Some(chain),
            Err(e) => {
                self.error(
                    kp,
                    quoted(value),
                    format!("cannot parse {}: {e}", file.display()),
                );
                None
            }
        }
    }

    pub(super) fn load_key(
        &mut self,
        kp: &KeyPath,
        value: &str,
    ) -> Option<(PathBuf, PrivateKeyDer<'static>)> {
        let (file, bytes) = self.read_file(kp, value)?;
        let key = self.parse_key(kp, value, &file, &bytes)?;
        Some((file, key))
    }

    /// The PEM private key in `bytes` (read from `file`, named by `value` at `kp`); an error
    /// when there is none or it does not parse.
    pub(super) fn parse_key(
        &mut self,
        kp: &KeyPath,
        value: &str,
        file: &Path,
        bytes: &[u8],
    ) -> Option<PrivateKeyDer<'static>> {
        match rustls_pemfile::private_key(&mut &*bytes) {
            Ok(Some(key)) => Some(key),
            Ok(None) => {
                self.error(
                    kp,
                    quoted(value),
                    format!(
                        "no private key found in {} (expected PEM \"BEGIN PRIVATE KEY\")",
                        file.display()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    kp,
                    quoted(value),
                    format!("cannot parse {}: {e}", file.display()),
                );
                None
            }
        }
    }

    pub(super) fn log(&mut self, l: &file::Log) -> Log {
        let p = KeyPath::root().key("log");
        let format = self.named(&p.key("format"), l.format.as_deref(), LogFormat::Text);
        let level = l.level.clone().unwrap_or_else(|| "info".to_owned());
        if let Err(message) = check_log_level(&level) {
            self.error(&p.key("level"), quoted(&level), message);
        }
        Log {
            format,
            level,
            access: l.access.unwrap_or(true),
        }
    }

    pub(super) fn affinity(&mut self, a: &file::Affinity) -> Affinity {
        let p = KeyPath::root().key("affinity");
        let mut secrets = Vec::new();
        if let Some(value) = a.secret_file.as_deref() {
            let kp = p.key("secret_file");
            if let Some((file, bytes)) = self.read_file(&kp, value) {
                let before = secrets.len();
                for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    let secret = line.trim_ascii();
                    if secret.is_empty() {
                        continue;
                    }
                    if secret.len() < MIN_SECRET_LEN {
                        self.error(
                            &kp,
                            quoted(value),
                            format!(
                                "the secret on line {} of {} is {} bytes; secrets need at least {MIN_SECRET_LEN}",
                                n + 1,
                                file.display(),
                                secret.len()
                            ),
                        );
                    }
                    secrets.push(secret.to_vec());
                }
                if secrets.len() == before {
                    self.error(
                        &kp,
                        quoted(value),
                        format!("{} contains no secret (one per line)", file.display()),
                    );
                }
            }
        }
        let inline: Vec<(KeyPath, &String)> = match &a.secret {
            None => Vec::new(),
            Some(Secrets::One(s)) => vec![(p.key("secret"), s)],
            Some(Secrets::Many(list)) => {
                if list.is_empty() {
                    self.error(&p.key("secret"), Some("[]".into()), "must not be empty");
                }
                list.iter()
                    .enumerate()
                    .map(|(i, s)| (p.key("secret").index(i), s))
                    .collect()
            }
        };
        for (kp, s) in inline {
            // Never echo a secret in an error.
            if s.len() < MIN_SECRET_LEN {
                self.error(
                    &kp,
                    None,
                    format!(
                        "secret is {} bytes; secrets need at least {MIN_SECRET_LEN}",
                        s.len()
                    ),
                );
            }
            secrets.push(s.as_bytes().to_vec());
        }
        Affinity { secrets }
    }
}
