use super::*;

/// A minimal ClientHello record with the given SNI and ALPN.
fn hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend(list);
    }
    if !alpn.is_empty() {
        let mut protocols = Vec::new();
        for p in alpn {
            protocols.push(p.len() as u8);
            protocols.extend_from_slice(p.as_bytes());
        }
        let mut list = (protocols.len() as u16).to_be_bytes().to_vec();
        list.extend(protocols);
        ext.extend_from_slice(&16u16.to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend(list);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[test]
fn sni_and_alpn_are_read() {
    let h = hello(Some("API.example.com"), &["h2", "http/1.1"]);
    assert_eq!(
        parse(&h),
        Hello::Parsed(ClientHello {
            sni: Some("api.example.com".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
        })
    );
    assert_eq!(
        parse(&hello(None, &[])),
        Hello::Parsed(ClientHello::default())
    );
}

#[test]
fn every_prefix_needs_more_and_garbage_is_not_tls() {
    let h = hello(Some("a.b"), &["h2"]);
    for n in 0..h.len() {
        let expected = if n == 0 {
            Hello::NotTls
        } else {
            Hello::NeedMore
        };
        assert_eq!(parse(&h[..n]), expected, "{n} bytes");
    }
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    assert_eq!(
        parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
        Hello::NotTls,
        "a ServerHello"
    );
    let mut truncated_inside = hello(Some("a.b"), &[]);
    truncated_inside[4] -= 3; // record shorter than the handshake claims
    truncated_inside.truncate(truncated_inside.len() - 3);
    assert_eq!(parse(&truncated_inside), Hello::NotTls);
}
