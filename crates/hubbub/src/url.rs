//! `ws://` and `wss://` URLs: what a server binds to and a client connects
//! to, parsed once for both.

use crate::error::{Error, Kind};

/// The parts of a `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) secure: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, `/` at least.
    pub(crate) path: String,
}

impl Target {
    /// Parses `ws://host[:port][/path][?query]` or `wss://…` (IPv6 literals
    /// in brackets; the scheme's port when none is given).
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::new(Kind::InvalidUrl(format!("{url}: {why}")));
        let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(invalid("expected ws://host[:port]/path or wss://…")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            (host, port.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            None | Some("") => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(port) => port.parse().map_err(|_| invalid("bad port"))?,
        };
        Ok(Self {
            secure,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The `Host` header: the port only when not the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.secure { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}
