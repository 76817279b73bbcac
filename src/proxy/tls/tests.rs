use super::*;

mod captured;
mod properties;

/// `bytes` behind a 2-byte length.
fn vec16(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

/// One extension: its type, then its data behind a 2-byte length.
fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend(vec16(data));
    v
}

/// A server_name extension: one entry per `(name_type, name)`.
fn server_names(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name_type, name) in entries {
        list.push(*name_type);
        list.extend(vec16(name));
    }
    extension(0, &vec16(&list))
}

/// A server_name extension with one host_name.
fn server_name(name: &[u8]) -> Vec<u8> {
    server_names(&[(0, name)])
}

/// An ALPN extension offering these protocol names.
fn alpn<S: AsRef<[u8]>>(names: &[S]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(name.as_ref().len() as u8);
        list.extend_from_slice(name.as_ref());
    }
    extension(16, &vec16(&list))
}

/// A ClientHello handshake message (its 4-byte header included) with these extensions.
fn message(extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // legacy_session_id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend(vec16(&extensions.concat()));
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    message
}

/// `message` as consecutive handshake records of at most `fragment` payload bytes each.
fn records(message: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend(vec16(chunk));
    }
    out
}

/// A ClientHello in one record with this SNI and ALPN.
fn hello(sni: Option<&str>, protocols: &[&str]) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        extensions.push(server_name(name.as_bytes()));
    }
    if !protocols.is_empty() {
        extensions.push(alpn(protocols));
    }
    records(&message(&extensions), MAX_FRAGMENT)
}

fn parsed(sni: Option<&str>, protocols: &[&str]) -> Hello {
    Hello::Parsed(ClientHello {
        sni: sni.map(str::to_owned),
        alpn: protocols.iter().map(|p| p.to_string()).collect(),
    })
}

#[test]
fn sni_and_alpn_are_read() {
    assert_eq!(
        parse(&hello(Some("API.example.com"), &["h2", "http/1.1"])),
        parsed(Some("api.example.com"), &["h2", "http/1.1"])
    );
    assert_eq!(parse(&hello(None, &[])), parsed(None, &[]));
    let no_extensions = {
        let mut m = message(&[]);
        m.truncate(m.len() - 2); // TLS 1.2 allows leaving the extensions out entirely
        m[3] -= 2;
        records(&m, MAX_FRAGMENT)
    };
    assert_eq!(parse(&no_extensions), parsed(None, &[]));
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
    let mut trailing = message(&[server_name(b"a.b")]);
    trailing.push(0); // a byte after the extensions, inside the message
    trailing[3] += 1;
    assert_eq!(parse(&records(&trailing, MAX_FRAGMENT)), Hello::NotTls);
}

/// Defect 1: 16,000 empty ALPN names made a 64 KB log line.
#[test]
fn alpn_is_capped_and_empty_names_are_malformed() {
    let flood = message(&[alpn(&vec![""; 16_000])]);
    assert!(flood.len() <= MAX_HANDSHAKE);
    assert_eq!(parse(&records(&flood, MAX_FRAGMENT)), Hello::NotTls);
    assert_eq!(parse(&hello(None, &["h2", ""])), Hello::NotTls);
    let empty_list = message(&[extension(16, &vec16(&[]))]);
    assert_eq!(parse(&records(&empty_list, MAX_FRAGMENT)), Hello::NotTls);

    // Many names: the first MAX_ALPN are kept, in order, so `h2` among them still routes.
    let mut offered: Vec<String> = (0..2_000).map(|i| format!("p{i}")).collect();
    offered.insert(MAX_ALPN - 1, "h2".into());
    let Hello::Parsed(kept) = parse(&records(&message(&[alpn(&offered)]), MAX_FRAGMENT)) else {
        panic!("2,001 ALPN names are a valid hello");
    };
    assert_eq!(kept.alpn, offered[..MAX_ALPN]);
    assert!(
        kept.describe().chars().count() <= 201,
        "{}",
        kept.describe()
    );
    offered.swap(MAX_ALPN - 1, MAX_ALPN);
    let Hello::Parsed(past_cap) = parse(&records(&message(&[alpn(&offered)]), MAX_FRAGMENT)) else {
        panic!("2,001 ALPN names are a valid hello");
    };
    assert!(!past_cap.alpn.contains(&"h2".to_string()));
}

#[test]
fn describe_escapes_what_it_logs() {
    let Hello::Parsed(h) = parse(&hello(None, &["h2", "a\nb\u{1b}[31m"])) else {
        panic!("a valid hello");
    };
    assert_eq!(h.describe(), r"sni=- alpn=[h2,a\nb\u{1b}[31m]");
}

/// Defect 2: the SNI is a DNS host name or the hello is malformed.
#[test]
fn sni_must_be_a_dns_host_name() {
    let label = "a".repeat(63);
    let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61)); // 253 bytes
    let good: &[(&str, &str)] = &[
        ("API.Example.COM", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("localhost", "localhost"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("3com.a-b.c0", "3com.a-b.c0"),
        (&label, &label),
        (&longest, &longest),
    ];
    for (sent, kept) in good {
        assert_eq!(
            parse(&hello(Some(sent), &[])),
            parsed(Some(kept), &[]),
            "{sent}"
        );
    }
    let too_long = format!("a{longest}");
    let label_64 = format!("{label}a.com");
    let bad: &[&[u8]] = &[
        b"",
        b".",
        b"..",
        b"a..b",
        b".a",
        b"a.b..",
        b"-a.com",
        b"a-.com",
        b"a_b.com",
        b"a b",
        b"*.example.com",
        b"a/b",
        b"a\0b",
        "b\u{fc}cher.example".as_bytes(),
        b"\xff\xfe",
        label_64.as_bytes(),
        too_long.as_bytes(),
    ];
    for name in bad {
        let h = records(&message(&[server_name(name)]), MAX_FRAGMENT);
        assert_eq!(parse(&h), Hello::NotTls, "{}", name.escape_ascii());
    }
    // Only host_name (type 0) entries count; there may be one of them (RFC 6066 §3).
    let other_type = server_names(&[(1, b"not a host name!"), (0, b"a.b")]);
    let only_other = server_names(&[(7, b"x")]);
    let two_hosts = server_names(&[(0, b"a.b"), (0, b"c.d")]);
    let no_names = extension(0, &vec16(&[]));
    let verdicts = [
        (other_type, parsed(Some("a.b"), &[])),
        (only_other, parsed(None, &[])),
        (two_hosts, Hello::NotTls),
        (no_names, Hello::NotTls),
    ];
    for (extension, verdict) in verdicts {
        let h = records(&message(&[extension]), MAX_FRAGMENT);
        assert_eq!(parse(&h), verdict);
    }
}

/// Defect 3: the same extension type twice is malformed (RFC 8446 §4.2).
#[test]
fn duplicate_extensions_are_malformed() {
    let table = [
        vec![server_name(b"a.b"), server_name(b"c.d")],
        vec![alpn(&["h2"]), server_name(b"a.b"), alpn(&["http/1.1"])],
        vec![extension(0xff01, &[0]), extension(0xff01, &[0])],
        vec![
            extension(0x0a0a, &[]),
            alpn(&["h2"]),
            extension(0x0a0a, &[]),
        ],
    ];
    for extensions in table {
        let h = records(&message(&extensions), MAX_FRAGMENT);
        assert_eq!(parse(&h), Hello::NotTls, "{extensions:02x?}");
    }
    let distinct = [
        extension(0x0a0a, &[]),
        alpn(&["h2"]),
        extension(0x1a1a, &[0]),
    ];
    let h = records(&message(&distinct), MAX_FRAGMENT);
    assert_eq!(parse(&h), parsed(None, &["h2"]));
}

/// Defect 4: a ClientHello may span several handshake records (RFC 8446 §5.1).
#[test]
fn hello_split_across_records_is_reassembled() {
    let m = message(&[server_name(b"api.example.com"), alpn(&["h2"])]);
    let want = parsed(Some("api.example.com"), &["h2"]);
    for fragment in [1, 2, 3, 4, 5, 7, 50, m.len() - 1, m.len()] {
        let split = records(&m, fragment);
        assert_eq!(parse(&split), want, "{fragment}-byte records");
        for n in 1..split.len() {
            assert_eq!(parse(&split[..n]), Hello::NeedMore, "{fragment}: {n} bytes");
        }
        let mut more = split.clone();
        more.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]); // what follows the hello is not read
        assert_eq!(parse(&more), want, "{fragment}-byte records, then more");
    }
    // The record after an unfinished hello must be another TLS 3.x handshake record.
    let split = records(&m, 40);
    let second = 5 + 40;
    let breaks: [(usize, &[u8]); 5] = [
        (second, &[0x17]),           // application data
        (second + 1, &[2]),          // not TLS 3.x
        (second + 2, &[5]),          // version 3.5
        (second + 3, &[0, 0]),       // an empty handshake record
        (second + 3, &[0x40, 0x01]), // more than 2^14 bytes of payload
    ];
    for (at, bytes) in breaks {
        let mut broken = split.clone();
        broken[at..at + bytes.len()].copy_from_slice(bytes);
        assert_eq!(parse(&broken), Hello::NotTls, "{bytes:02x?} at {at}");
        assert_eq!(parse(&broken[..at + bytes.len()]), Hello::NotTls, "early");
    }
}

/// Reassembly is bounded: NeedMore never comes back for MAX_HELLO_BYTES buffered.
#[test]
fn buffering_is_capped() {
    let too_big = [0x16, 3, 1, 0, 4, 1, 0, 0x40, 0x00]; // a 2^14-byte body, header extra
    assert_eq!(parse(&too_big), Hello::NotTls);
    let fill = MAX_HANDSHAKE - message(&[extension(0xff00, &[])]).len();
    let largest = message(&[extension(0xff00, &vec![0; fill])]);
    assert_eq!(largest.len(), MAX_HANDSHAKE);
    assert_eq!(parse(&records(&largest, MAX_FRAGMENT)), parsed(None, &[]));
    assert_eq!(parse(&records(&largest, 1 << 10)), parsed(None, &[]));

    let trickled = records(&message(&[extension(0xff00, &[0; 3_000])]), 1);
    assert!(trickled.len() > MAX_HELLO_BYTES);
    assert_eq!(parse(&trickled[..MAX_HELLO_BYTES - 1]), Hello::NeedMore);
    assert_eq!(parse(&trickled[..MAX_HELLO_BYTES]), Hello::NotTls);
    assert_eq!(parse(&trickled), Hello::NotTls);
}
