//! ClientHellos captured from real clients: `tests/data/client_hello/README.md` says how each
//! was taken. All of them ask for `api.example.com`.

use super::*;
use std::sync::Arc;

macro_rules! fixture {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/client_hello/",
            $file
        ))
        .as_slice()
    };
}

/// The handshake payloads of `bytes`, one per record (the fixtures hold whole records only).
fn payloads(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        out.push(&bytes[5..5 + len]);
        bytes = &bytes[5 + len..];
    }
    out
}

/// Checks one capture: its verdict, that every prefix needs more, and that re-cutting its
/// handshake message into other records changes nothing.
fn check(client: &str, bytes: &[u8], records_sent: usize, sni: &str, alpn: &[&str]) {
    let want = parsed(Some(sni), alpn);
    assert_eq!(parse(bytes), want, "{client}");
    assert_eq!(payloads(bytes).len(), records_sent, "{client}: records");
    for n in 1..bytes.len() {
        assert_eq!(parse(&bytes[..n]), Hello::NeedMore, "{client}: {n} bytes");
    }
    let message = payloads(bytes).concat();
    for fragment in [1, 2, 5, 100, 512, MAX_FRAGMENT] {
        assert_eq!(
            parse(&records(&message, fragment)),
            want,
            "{client}: {fragment}"
        );
    }
}

#[test]
fn openssl_s_client_hello() {
    check(
        "openssl",
        fixture!("openssl.bin"),
        1,
        "api.example.com",
        &["h2"],
    );
}

/// `-max_send_frag 512` made OpenSSL cut its 712-byte hello into two records.
#[test]
fn openssl_hello_in_two_records() {
    let padding = |i| format!("x-padding-protocol-{i:02}-{}", "p".repeat(40));
    let mut alpn = vec!["h2".to_string(), "http/1.1".to_string()];
    alpn.extend((0..6).map(padding));
    let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
    let bytes = fixture!("openssl-split.bin");
    check("openssl split", bytes, 2, "api.example.com", &alpn);
}

#[test]
fn curl_hello() {
    let bytes = fixture!("curl.bin");
    check("curl", bytes, 1, "api.example.com", &["h2", "http/1.1"]);
}

#[test]
fn grpc_python_hello() {
    let bytes = fixture!("grpc-python.bin");
    check("grpc-python", bytes, 1, "api.example.com", &["h2"]);
}

#[test]
fn rustls_hello() {
    check(
        "rustls",
        fixture!("rustls.bin"),
        1,
        "api.example.com",
        &["h2"],
    );
}

/// The first flight of a rustls client with this SNI and ALPN, made now.
fn rustls_client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("a DNS name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

/// The fixture is one capture; this makes sure the rustls in use today still parses.
#[test]
fn rustls_hello_made_now() {
    let bytes = rustls_client_hello("API.example.com", &["h2", "http/1.1"]);
    check(
        "rustls now",
        &bytes,
        1,
        "api.example.com",
        &["h2", "http/1.1"],
    );
}
