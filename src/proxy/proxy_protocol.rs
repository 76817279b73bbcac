//! The PROXY protocol (haproxy.org's proxy-protocol.txt): the version 2 header the proxy
//! writes for backends that want to know who the real client is (the proxy's own connection
//! would otherwise be all they see), and reading a v1 or v2 header from a load balancer in
//! front of the proxy — only from the sources `--accept-proxy-protocol` trusts, because a
//! header is a claim anyone can make.
//!
//! Reading takes exactly the header's bytes and no more: whatever follows is the client's
//! own stream, which detection must see from its first byte. Parsing is `ppp`'s.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt};

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

/// The longest v1 header (section 2.1).
const MAX_V1: usize = 107;
/// The most address and TLV bytes accepted after a v2 header's fixed 16: room for IPv6
/// addresses and the TLVs load balancers add (AWS: VPC endpoint id), not for 64 KiB.
const MAX_V2_EXTRA: usize = 512;

/// Why a header from a trusted source was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY header where one was required")]
    Missing,
    #[error("PROXY header longer than allowed")]
    TooLong,
    #[error("malformed PROXY header")]
    Malformed,
}

/// Reads one v1 or v2 header. `Some((client, dialled))` for a proxied TCP connection;
/// `None` for a `LOCAL`/`UNKNOWN` one (the balancer's own health check).
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(SocketAddr, SocketAddr)>, HeaderError> {
    // 15 bytes: the shortest v1 header ("PROXY UNKNOWN\r\n"), one short of v2's fixed part.
    let mut head = vec![0u8; 15];
    r.read_exact(&mut head).await?;
    if head[..12] == SIGNATURE {
        head.push(r.read_u8().await?);
        let extra = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if extra > MAX_V2_EXTRA {
            return Err(HeaderError::TooLong);
        }
        head.resize(16 + extra, 0);
        r.read_exact(&mut head[16..]).await?;
        let header =
            ppp::v2::Header::try_from(head.as_slice()).map_err(|_| HeaderError::Malformed)?;
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => Some((
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            )),
            ppp::v2::Addresses::IPv6(a) => Some((
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            )),
            _ => None,
        });
    }
    if !head.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    // v1 ends at CRLF; read a byte at a time so nothing after it is taken.
    while !head.ends_with(b"\r\n") {
        if head.len() >= MAX_V1 {
            return Err(HeaderError::TooLong);
        }
        head.push(r.read_u8().await?);
    }
    let header = ppp::v1::Header::try_from(head.as_slice()).map_err(|_| HeaderError::Malformed)?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        )),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an address block (e.g. 10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => max,
            p => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Feeds `bytes` to `read_header`; returns its answer and what it left unread.
    async fn read(
        bytes: &[u8],
    ) -> (
        Result<Option<(SocketAddr, SocketAddr)>, HeaderError>,
        Vec<u8>,
    ) {
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(bytes).await.unwrap();
        drop(far);
        let got = read_header(&mut near).await;
        let mut rest = Vec::new();
        near.read_to_end(&mut rest).await.unwrap();
        (got, rest)
    }

    #[tokio::test]
    async fn headers_are_read_exactly_and_the_stream_after_them_is_left() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 7000\r\nPRI * HTTP/2.0";
        let (got, rest) = read(v1).await;
        let want = (
            "192.0.2.1:40000".parse().unwrap(),
            "198.51.100.2:7000".parse().unwrap(),
        );
        assert_eq!(got.unwrap(), Some(want));
        assert_eq!(rest, b"PRI * HTTP/2.0");

        let mut v2 = Vec::new();
        write_header(
            &mut v2,
            "[2001:db8::1]:5".parse().unwrap(),
            "[2001:db8::2]:6".parse().unwrap(),
        );
        v2.extend_from_slice(&[0xFF, 0, 0]);
        let (got, rest) = read(&v2).await;
        let want = (
            "[2001:db8::1]:5".parse().unwrap(),
            "[2001:db8::2]:6".parse().unwrap(),
        );
        assert_eq!(got.unwrap(), Some(want));
        assert_eq!(rest, [0xFF, 0, 0]);

        let (got, rest) = read(b"PROXY UNKNOWN\r\nrest").await;
        assert_eq!(got.unwrap(), None);
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let zmtp = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1, 0, 0, 0, 0];
        assert!(matches!(read(&zmtp).await.0, Err(HeaderError::Missing)));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(read(&long).await.0, Err(HeaderError::TooLong)));
        let bad = b"PROXY TCP4 not addresses at all\r\n";
        assert!(matches!(read(bad).await.0, Err(HeaderError::Malformed)));
        let mut huge = SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(read(&huge).await.0, Err(HeaderError::TooLong)));
        assert!(matches!(read(b"PROXY").await.0, Err(HeaderError::Io(_))));
    }

    #[test]
    fn address_blocks_contain_what_they_should() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

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
