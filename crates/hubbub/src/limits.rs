//! Per-address limits: open connections and handshake rate per client IP,
//! and the message rate of one connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// A token bucket: `rate` events per second on average, bursts of `burst`.
///
/// ```
/// let limit = hubbub::RateLimit::new(10.0, 20);
/// assert_eq!((limit.rate, limit.burst), (10.0, 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Events per second, on average.
    pub rate: f64,
    /// Events allowed at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst }
    }
}

/// A bucket's state: tokens left and when they were last counted, in the
/// server's milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    pub(crate) fn full(limit: &RateLimit, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            at_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, limit: &RateLimit, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * limit.rate).min(f64::from(limit.burst));
        self.at_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, limit: &RateLimit, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens + elapsed * limit.rate >= f64::from(limit.burst)
    }
}

/// What is known about one client address.
#[derive(Debug, Default)]
struct Address {
    open: usize,
    /// Handshakes in progress (accepted, not yet upgraded or answered).
    handshaking: usize,
    handshakes: Option<Bucket>,
    /// Currently refusing: log only the first refusal of a burst.
    refusing: bool,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManyConnections,
    TooManyHandshakes,
}

/// Per-address counters; a std `Mutex`, never held across an `.await`.
#[derive(Default)]
pub(crate) struct PerAddress {
    map: Mutex<HashMap<IpAddr, Address>>,
}

impl PerAddress {
    /// Counts a handshake from `ip` and, if allowed, reserves a connection
    /// slot (release it with [`PerAddress::release`]). The `bool` of a
    /// refusal says whether to log it (the first of a burst).
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        max_connections: Option<usize>,
        rate: Option<&RateLimit>,
        now_ms: u64,
    ) -> Result<(), (Refusal, bool)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ip).or_default();
        let refusal = if let Some(limit) = rate {
            let bucket = entry
                .handshakes
                .get_or_insert_with(|| Bucket::full(limit, now_ms));
            (!bucket.take(limit, now_ms)).then_some(Refusal::TooManyHandshakes)
        } else {
            None
        };
        let refusal = refusal.or_else(|| {
            max_connections
                .is_some_and(|max| entry.open >= max)
                .then_some(Refusal::TooManyConnections)
        });
        match refusal {
            Some(refusal) => {
                let first = !entry.refusing;
                entry.refusing = true;
                Err((refusal, first))
            }
            None => {
                entry.refusing = false;
                entry.open += 1;
                Ok(())
            }
        }
    }

    /// Releases a slot taken by [`PerAddress::admit`].
    pub(crate) fn release(&self, ip: IpAddr) {
        self.update(ip, |entry| entry.open = entry.open.saturating_sub(1));
    }

    /// Counts a handshake starting from `ip`, if fewer than `max` are in
    /// progress from it (end it with [`PerAddress::end_handshake`]).
    pub(crate) fn begin_handshake(&self, ip: IpAddr, max: usize) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ip).or_default();
        if entry.handshaking >= max {
            return false;
        }
        entry.handshaking += 1;
        true
    }

    /// A handshake from `ip` ended.
    pub(crate) fn end_handshake(&self, ip: IpAddr) {
        self.update(ip, |entry| {
            entry.handshaking = entry.handshaking.saturating_sub(1)
        });
    }

    /// Changes `ip`'s entry, forgetting it when nothing is left in it.
    fn update(&self, ip: IpAddr, change: impl FnOnce(&mut Address)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&ip) {
            change(entry);
            if entry.open == 0 && entry.handshaking == 0 && entry.handshakes.is_none() {
                map.remove(&ip);
            }
        }
    }

    /// Forgets addresses with nothing open and a full bucket, so that the
    /// map holds only addresses that matter.
    pub(crate) fn sweep(&self, rate: Option<&RateLimit>, now_ms: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, entry| {
            entry.open > 0
                || entry.handshaking > 0
                || match (&entry.handshakes, rate) {
                    (Some(bucket), Some(limit)) => !bucket.is_full(limit, now_ms),
                    _ => false,
                }
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// The client's address of a request that came through `peer`: when `peer`
/// is a trusted proxy, the last address in `X-Forwarded-For` (or in
/// `Forwarded`'s `for=` values) that is not a trusted proxy itself; else
/// `peer`. A header that does not parse leaves `peer`.
pub(crate) fn client_address(
    peer: SocketAddr,
    request: &hubbub_proto::handshake::Request,
    trusted: &[IpAddr],
) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let headers = request.headers();
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        hops.extend(value.split(',').filter_map(|hop| parse_hop(hop.trim())));
    }
    if hops.is_empty() {
        for value in headers.get_all("forwarded") {
            for element in value.split(',') {
                hops.extend(element.split(';').filter_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.eq_ignore_ascii_case("for")
                        .then(|| parse_hop(value.trim().trim_matches('"')))
                        .flatten()
                }));
            }
        }
    }
    match hops.into_iter().rev().find(|ip| !trusted.contains(ip)) {
        Some(ip) => SocketAddr::new(ip, 0),
        None => peer,
    }
}

/// One hop of a forwarding header: an address, with or without a port, an
/// IPv6 one in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(v6) = hop.strip_prefix('[') {
        return v6.split_once(']')?.0.parse().ok();
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// How often the per-address map is swept when a handshake rate is set.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn forwarded_addresses_count_only_through_trusted_proxies() {
        let parse = |head: &str| {
            let mut buf = bytes::BytesMut::from(head);
            hubbub_proto::handshake::RequestParser::new(&Default::default())
                .parse(&mut buf)
                .unwrap()
                .unwrap()
        };
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let trusted = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let request = parse(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.1, 203.0.113.7, 10.0.0.2\r\n\r\n",
        );
        // The last address no trusted proxy added: the client as the first
        // trusted proxy saw it (what came before it may be forged).
        assert_eq!(
            client_address(proxy, &request, &trusted).ip().to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            client_address(stranger, &request, &trusted),
            stranger,
            "not a proxy"
        );
        let forwarded = parse(
            "GET / HTTP/1.1\r\nHost: x\r\nForwarded: for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"\r\n\r\n",
        );
        assert_eq!(
            client_address(proxy, &forwarded, &trusted).ip().to_string(),
            "2001:db8::1"
        );
        let garbage = parse("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: nonsense\r\n\r\n");
        assert_eq!(client_address(proxy, &garbage, &trusted), proxy);
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let limit = RateLimit::new(2.0, 3);
        let mut bucket = Bucket::full(&limit, 0);
        assert!((0..3).all(|_| bucket.take(&limit, 0)));
        assert!(!bucket.take(&limit, 0));
        assert!(!bucket.take(&limit, 400));
        assert!(bucket.take(&limit, 500));
        assert!(!bucket.take(&limit, 500));
    }

    #[test]
    fn per_address_connection_limit_logs_once_per_burst() {
        let limits = PerAddress::default();
        assert!(limits.admit(IP, Some(2), None, 0).is_ok());
        assert!(limits.admit(IP, Some(2), None, 0).is_ok());
        assert_eq!(
            limits.admit(IP, Some(2), None, 0),
            Err((Refusal::TooManyConnections, true))
        );
        assert_eq!(
            limits.admit(IP, Some(2), None, 0),
            Err((Refusal::TooManyConnections, false))
        );
        limits.release(IP);
        assert!(limits.admit(IP, Some(2), None, 0).is_ok());
        limits.release(IP);
        limits.release(IP);
        assert_eq!(limits.len(), 0);
    }

    #[test]
    fn per_address_handshake_rate_and_sweep() {
        let limits = PerAddress::default();
        let rate = RateLimit::new(1.0, 2);
        assert!(limits.admit(IP, None, Some(&rate), 0).is_ok());
        assert!(limits.admit(IP, None, Some(&rate), 0).is_ok());
        assert_eq!(
            limits.admit(IP, None, Some(&rate), 0),
            Err((Refusal::TooManyHandshakes, true))
        );
        limits.release(IP);
        limits.release(IP);
        limits.sweep(Some(&rate), 500);
        assert_eq!(limits.len(), 1, "bucket not full yet");
        limits.sweep(Some(&rate), 5000);
        assert_eq!(limits.len(), 0);
    }
}
