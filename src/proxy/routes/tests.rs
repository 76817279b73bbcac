//! The routing decision on tables, with no sockets.
use super::*;

fn backend(s: &str) -> Target {
    Target::Backend(s.parse().unwrap())
}

fn hello(sni: Option<&str>, alpn: &[&str]) -> Sniffed {
    Sniffed::Tls(ClientHello {
        sni: sni.map(str::to_owned),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
    })
}

/// The route (name and backend) or the reason for closing, as one comparable string.
fn verdict(routes: &Routes, sniffed: &Sniffed) -> String {
    match decide(routes, sniffed) {
        Decision::Route(name, target) => format!("{name} {target}"),
        Decision::Close(why) => format!("close {why:?}"),
    }
}

#[test]
fn decisions_follow_the_table() {
    let plain = Routes::to_backends("z:1".parse().unwrap(), "g:2".parse().unwrap());
    let full = Routes {
        fallback: Some(backend("f:3")),
        tls: Some(TlsRoutes {
            rules: vec![
                TlsRule {
                    sni: Some("*.example.com".into()),
                    alpn: None,
                    backend: backend("wild:4"),
                },
                TlsRule {
                    sni: None,
                    alpn: Some("h2".into()),
                    backend: backend("h2:5"),
                },
            ],
            default: None,
        }),
        ..plain.clone()
    };
    let zmq = Sniffed::Protocol(Protocol::Zmtp);
    let grpc = Sniffed::Protocol(Protocol::Http2);
    let table: &[(&Routes, Sniffed, &str)] = &[
        (&plain, zmq.clone(), "zmq z:1"),
        (&plain, grpc.clone(), "grpc g:2"),
        (&plain, Sniffed::Unrecognised, "close Unrecognised"),
        (&plain, Sniffed::Silent, "close Silent"),
        (
            &plain,
            hello(Some("a.example.com"), &[]),
            "close NoTlsRoute",
        ),
        (&full, zmq, "zmq z:1"),
        (&full, grpc, "grpc g:2"),
        (&full, Sniffed::Unrecognised, "fallback f:3"),
        (&full, Sniffed::Silent, "fallback f:3"),
        (&full, hello(Some("a.example.com"), &["h2"]), "tls wild:4"),
        (&full, hello(Some("a.b.example.com"), &[]), "tls wild:4"),
        (&full, hello(Some("example.com"), &["h2"]), "tls h2:5"),
        (
            &full,
            hello(Some("example.com"), &["http/1.1"]),
            "fallback f:3",
        ),
        (&full, hello(None, &[]), "fallback f:3"),
    ];
    for (routes, sniffed, want) in table {
        assert_eq!(verdict(routes, sniffed), *want, "{sniffed:?}");
    }
}

#[test]
fn tls_default_catches_what_no_rule_matches() {
    let routes = Routes {
        tls: Some(TlsRoutes {
            rules: vec![],
            default: Some(backend("d:9")),
        }),
        ..Routes::to_backends("z:1".parse().unwrap(), "g:2".parse().unwrap())
    };
    assert_eq!(verdict(&routes, &hello(None, &[])), "tls d:9");
}

#[test]
fn route_names_round_trip() {
    for name in RouteName::ALL {
        assert_eq!(name.as_str().parse::<RouteName>(), Ok(name));
    }
    let err = "http".parse::<RouteName>().unwrap_err();
    assert!(err.contains("zmq, grpc, tls, fallback"), "{err}");
}

#[test]
fn backend_addresses_are_validated() {
    for ok in [
        "127.0.0.1:7001",
        "[::1]:7001",
        "localhost:1",
        "zmq.svc.local:65535",
    ] {
        assert!(ok.parse::<BackendAddr>().is_ok(), "{ok}");
    }
    for bad in [
        "",
        "7001",
        "127.0.0.1",
        "127.0.0.1:0",
        "host:99999",
        "::1:7001",
        ":7001",
        "[::1:7001",
    ] {
        assert!(bad.parse::<BackendAddr>().is_err(), "{bad}");
    }
}
