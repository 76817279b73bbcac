//! The PROXY protocol version 2 header (haproxy.org's proxy-protocol.txt, section 2.2), which
//! tells a backend that understands it who the real client is: the proxy's own connection
//! would otherwise be all the backend sees.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Appends a `PROXY` command for a TCP connection from `client` to `server` (the address
/// the client dialled). Mixed families are written as IPv6, IPv4 ones mapped.
pub fn write_header(out: &mut Vec<u8>, client: SocketAddr, server: SocketAddr) {
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (client.ip(), server.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11); // AF_INET, SOCK_STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21); // AF_INET6, SOCK_STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_byte_exact() {
        let mut h = Vec::new();
        write_header(
            &mut h,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap(),
        );
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2]);
        expected.extend_from_slice(&40000u16.to_be_bytes());
        expected.extend_from_slice(&7000u16.to_be_bytes());
        assert_eq!(h, expected);
    }

    #[test]
    fn ipv6_header_has_36_address_bytes() {
        let mut h = Vec::new();
        write_header(
            &mut h,
            "[::1]:5".parse().unwrap(),
            "[::1]:6".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!((h[12], h[13], h[14], h[15]), (0x21, 0x21, 0, 36));
    }
}
