//! TLS routed by SNI and ALPN without terminating it: real rustls clients complete real
//! handshakes (certificates made here with rcgen) with the rustls server the rules chose.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server that answers every client with its own name, then closes.
fn tls_backend(name: &'static str, cert: CertificateDer<'static>, key: Vec<u8>) -> String {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut hello = [0u8; 5];
            if tls.read_exact(&mut hello).is_ok() {
                let _ = tls.write_all(name.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    addr
}

/// Connects through the proxy with this SNI and ALPN; returns which backend answered.
fn who_answers(proxy: &str, roots: &rustls::RootCertStore, sni: &str, alpn: &[&str]) -> String {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(proxy).unwrap());
    tls.write_all(b"hello").unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn tls_is_routed_by_sni_and_alpn() {
    let names = ["localhost", "api.example.com", "web.example.com"];
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.map(String::from).to_vec()).unwrap();
    let cert = cert.der().clone();
    let key = signing_key.serialize_der();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();

    let h2 = tls_backend("grpc-over-tls", cert.clone(), key.clone());
    let api = tls_backend("api", cert.clone(), key.clone());
    let default = tls_backend("default", cert, key);
    let path = std::env::temp_dir().join(format!("zgp-tls-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "tls_backend = \"{default}\"\n\n\
             [[tls_route]]\nalpn = \"h2\"\nbackend = \"{h2}\"\n\n\
             [[tls_route]]\nsni = \"api.example.com\"\nbackend = \"{api}\"\n"
        ),
    )
    .unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(&dead, &dead, &["--config", path.to_str().unwrap()]);
    let addr = proxy.listen_addr();

    assert_eq!(
        who_answers(&addr, &roots, "web.example.com", &["h2"]),
        "grpc-over-tls",
        "ALPN h2"
    );
    assert_eq!(
        who_answers(&addr, &roots, "api.example.com", &["http/1.1"]),
        "api",
        "by SNI"
    );
    assert_eq!(
        who_answers(&addr, &roots, "api.example.com", &["h2"]),
        "grpc-over-tls",
        "first rule wins"
    );
    assert_eq!(
        who_answers(&addr, &roots, "localhost", &[]),
        "default",
        "no rule matched"
    );
    proxy.wait_for_logs(&["closed", "route=tls"], 4, PATIENCE);
    let line = proxy.wait_for_log(&format!("backend={api}"), PATIENCE);
    assert!(line.contains("route=tls"), "{line}");
}
