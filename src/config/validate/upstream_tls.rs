//! `[pool.NAME.tls]`: TLS to the pool's backends (DESIGN.md §17). The CA bundle and the client
//! certificate and key are read and checked here, so that nothing in Pingora's connector can fail
//! or panic on them later: its `CertKey::new` panics on a certificate x509-parser cannot read,
//! and it parses the key again from DER on every connection.

use super::*;

impl Cx<'_> {
    pub(super) fn upstream_tls(
        &mut self,
        kp: &KeyPath,
        t: &file::UpstreamTls,
    ) -> Option<UpstreamTls> {
        let mut ok = true;
        let sni = t.sni.as_deref().and_then(|s| {
            let valid = !s.is_empty() && rustls::pki_types::ServerName::try_from(s).is_ok();
            if !valid {
                self.error(
                    &kp.key("sni"),
                    quoted(s),
                    "must be a DNS name (e.g. \"api.internal\") or an IP address; omit sni to send none",
                );
                ok = false;
            }
            valid.then(|| s.to_owned())
        });
        let ca = match t.ca_file.as_deref() {
            None => None,
            Some(v) => {
                let bundle = self.ca_bundle(&kp.key("ca_file"), v);
                ok &= bundle.is_some();
                bundle
            }
        };
        let client = match (&t.cert, &t.key) {
            (None, None) => None,
            (cert, key) => {
                let files = file::CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                let pair = self
                    .cert_pair(kp, &files)
                    .filter(|pair| self.client_pair_usable(kp, &files, pair));
                ok &= pair.is_some();
                pair
            }
        };
        ok.then(|| UpstreamTls {
            sni,
            verify: t.verify.unwrap_or(true),
            ca,
            client,
        })
    }

    /// A PEM bundle of trust anchors: at least one certificate, each usable as a root.
    fn ca_bundle(&mut self, kp: &KeyPath, value: &str) -> Option<CaBundle> {
        let (path, certs) = self.load_chain(kp, value)?;
        let mut roots = rustls::RootCertStore::empty();
        for (i, der) in certs.iter().enumerate() {
            let problem = match roots.add(der.clone()) {
                Err(e) => Some(e.to_string()),
                Ok(()) => x509_parser::parse_x509_certificate(der)
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(problem) = problem {
                self.error(
                    kp,
                    quoted(value),
                    format!(
                        "certificate {} in {} is not a usable CA certificate: {problem}",
                        i + 1,
                        path.display()
                    ),
                );
                return None;
            }
        }
        Some(CaBundle { path, certs })
    }

    /// What Pingora's connector would panic or fail on with a client certificate that rustls
    /// accepted: a certificate x509-parser cannot read, a key whose DER it cannot classify.
    fn client_pair_usable(&mut self, kp: &KeyPath, files: &file::CertFiles, p: &CertPair) -> bool {
        for (i, der) in p.chain.iter().enumerate() {
            if let Err(e) = x509_parser::parse_x509_certificate(der) {
                self.error(
                    &kp.key("cert"),
                    files.cert.as_deref().and_then(quoted),
                    format!(
                        "certificate {} in {} cannot be parsed: {e}",
                        i + 1,
                        p.cert_path.display()
                    ),
                );
                return false;
            }
        }
        if let Err(e) = PrivateKeyDer::try_from(p.key.secret_der()) {
            self.error(
                &kp.key("key"),
                files.key.as_deref().and_then(quoted),
                format!("cannot use private key {}: {e}", p.key_path.display()),
            );
            return false;
        }
        true
    }
}
