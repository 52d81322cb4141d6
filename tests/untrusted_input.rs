//! Property tests over untrusted input (STYLE.md 12, in lieu of a cargo-fuzz setup): the cookie
//! decoder, the config parser and the route matcher must never panic, whatever bytes they get,
//! and a decoded cookie must have been produced by the codec.

use proptest::prelude::*;
use tether::balance::cookie::{Affinity, CookieCodec};

fn codec() -> CookieCodec {
    CookieCodec::new("shop", &[b"untrusted-input-secret-0123456789".to_vec()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn cookie_decoder_never_panics_or_accepts_noise(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        prop_assert!(codec().decode(&bytes, 1_000_000, Some(3600)).is_err());
    }

    #[test]
    fn cookie_decoder_rejects_every_mutation(
        nonce in proptest::array::uniform12(any::<u8>()),
        pos in 0usize..60,
        ch in proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()),
    ) {
        let c = codec();
        let text = c.encode(&Affinity { backend: [7; 8], nonce, issued: 1_000_000 });
        let mut bytes = text.into_bytes();
        prop_assume!(bytes[pos] != ch);
        bytes[pos] = ch;
        prop_assert!(c.decode(&bytes, 1_000_000, None).is_err());
    }

    #[test]
    fn config_parser_never_panics(text in "[\\[\\]a-z_.=\"0-9: \n,{}*/-]{0,300}") {
        let _ = tether::config::parse(&text, None);
    }
}

#[test]
fn route_matching_never_panics_on_odd_hosts() {
    let cfg = tether::config::parse(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n\
         [[route]]\nhost = \"*.example.com\"\npool = \"p\"\n\
         [[route]]\nhost = \"exact.test\"\npath_prefix = \"/a\"\npool = \"p\"\n\
         [pool.p]\npolicy = \"round_robin\"\n[[pool.p.backend]]\nid = \"b\"\naddr = \"127.0.0.1:1\"\n",
        None,
    )
    .unwrap();
    let registry = tether::state::backend::Registry::new(std::sync::Arc::new(
        tether::state::metrics::Metrics::new(),
    ));
    let snap = tether::snapshot::Snapshot::build(std::sync::Arc::new(cfg), &registry, 1, None);
    let hosts: [&[u8]; 8] = [
        b"",
        b".",
        b".example.com",
        b"example.com",
        b"\xff\xfe",
        b"a.example.com",
        b"EXACT.TEST",
        b"[::1]",
    ];
    for h in hosts {
        for p in [&b""[..], b"/", b"/a", b"/ab", b"\x00"] {
            let _ = snap.route(h, p);
        }
    }
    assert_eq!(
        snap.route(b".example.com", b"/"),
        None,
        "the bare suffix is not a subdomain"
    );
    let name = |h: &[u8], p: &[u8]| snap.route(h, p).map(|i| snap.routes[i].name.to_string());
    assert_eq!(
        name(b"a.example.com", b"/x").as_deref(),
        Some("*.example.com/")
    );
    assert_eq!(name(b"EXACT.TEST", b"/ab").as_deref(), Some("exact.test/a"));
}
