//! The envelope's compact encoding and the Lua script that orders it.
//!
//! A publish is encoded once by the publishing node as the *body*:
//!
//! ```text
//! [1: version = 1][1: kind, 1 text / 2 binary][16: node id][8: node sequence, big-endian]
//! [1: 0 or 1][16: excluded connection id, when 1][payload…]
//! ```
//!
//! The script prefixes what it assigns, so a pub/sub message reads
//! `"<offset> <epoch> " + body`; the stream keeps the body under field `b`
//! with the offset as the entry id (`<offset>-0`).

use bytes::{BufMut, Bytes, BytesMut};
use hubbub::{Message, Utf8Bytes, Uuid};

const VERSION: u8 = 1;

/// A decoded body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Body {
    pub(crate) node: Uuid,
    pub(crate) seq: u64,
    pub(crate) except: Option<Uuid>,
    pub(crate) message: Message,
}

pub(crate) fn encode(node: Uuid, seq: u64, except: Option<Uuid>, message: &Message) -> Bytes {
    let (kind, payload): (u8, &[u8]) = match message {
        Message::Text(text) => (1, text.as_bytes()),
        Message::Binary(data) => (2, data),
    };
    let mut out = BytesMut::with_capacity(43 + payload.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_slice(node.as_bytes());
    out.put_u64(seq);
    match except {
        Some(id) => {
            out.put_u8(1);
            out.put_slice(id.as_bytes());
        }
        None => out.put_u8(0),
    }
    out.put_slice(payload);
    out.freeze()
}

pub(crate) fn decode(body: Bytes) -> Option<Body> {
    if body.len() < 27 || body[0] != VERSION {
        return None;
    }
    let kind = body[1];
    let node = Uuid::from_slice(&body[2..18]).ok()?;
    let seq = u64::from_be_bytes(body[18..26].try_into().ok()?);
    let (except, start) = match body[26] {
        0 => (None, 27),
        1 if body.len() >= 43 => (Some(Uuid::from_slice(&body[27..43]).ok()?), 43),
        _ => return None,
    };
    let payload = body.slice(start..);
    let message = match kind {
        1 => Message::Text(Utf8Bytes::try_from_bytes(payload).ok()?),
        2 => Message::Binary(payload),
        _ => return None,
    };
    Some(Body {
        node,
        seq,
        except,
        message,
    })
}

/// Splits a pub/sub message into offset, epoch and body.
pub(crate) fn split_published(message: &[u8]) -> Option<(u64, String, Bytes)> {
    let first = message.iter().position(|&b| b == b' ')?;
    let offset = std::str::from_utf8(&message[..first]).ok()?.parse().ok()?;
    let rest = &message[first + 1..];
    let second = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..second]).ok()?.to_owned();
    Some((offset, epoch, Bytes::copy_from_slice(&rest[second + 1..])))
}

/// Parses a stream entry id `<offset>-0`.
pub(crate) fn entry_offset(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// Assigns the topic's next offset, appends the body to the topic's capped
/// stream and publishes it, atomically, so that every node sees one order
/// per topic. A (node, sequence) already seen for the topic is not
/// published twice (a retried batch is idempotent). A topic whose epoch key
/// is gone (new, expired, or Redis lost its data) starts over at offset 1
/// under a new epoch.
///
/// KEYS: offset, epoch, stream, last sequence per node (one hash tag, so
/// one cluster slot; the channel has it too).
/// ARGV: node, sequence, epoch candidate, body, history length, key TTL
/// (seconds), channel, publish command (`PUBLISH`, or `SPUBLISH` in a
/// cluster). Returns the offset, or 0 for a duplicate.
pub(crate) const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
  redis.call('SET', KEYS[2], epoch)
end
local last = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then
  return 0
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
local offset = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], offset .. '-0', 'b', ARGV[4])
for i = 1, 4 do
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
redis.call(ARGV[8], ARGV[7], offset .. ' ' .. epoch .. ' ' .. ARGV[4])
return offset
";

/// After a failover the new master may hold fewer of a topic's offsets
/// than a node already delivered (replication is asynchronous): raises the
/// topic's offset to what the node saw, in the same epoch, so that no
/// offset is given to a second message. What the new master lost is
/// reported as a gap to whoever asks the history for it.
///
/// KEYS: offset, epoch. ARGV: epoch, offset seen. Returns 1 when raised.
pub(crate) const RAISE_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// A node's presence in a topic, stamped with Redis's own clock (`TIME`),
/// so that nodes need not agree on the time: writes this node's count
/// (unless ARGV[2] is empty) with an expiry `ttl` after Redis's now,
/// removes the entries that expired by that same clock, and returns the
/// other nodes' total.
///
/// KEYS: the presence hash. ARGV: node, count or '', ttl (ms).
pub(crate) const PRESENCE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + ttl))
  redis.call('PEXPIRE', KEYS[1], 2 * ttl)
end
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    local count, expires = string.match(all[i + 1], '^(%d+):(%d+)$')
    if count and tonumber(expires) > now then
      others = others + tonumber(count)
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
return others
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_text_and_binary_with_and_without_except() {
        let node = Uuid::new_v4();
        for except in [None, Some(Uuid::new_v4())] {
            for message in [
                Message::from("héllo"),
                Message::from(vec![0u8, 255, 32, 10]),
                Message::from(""),
            ] {
                let body = encode(node, 42, except, &message);
                let back = decode(body).unwrap();
                assert_eq!(back.node, node);
                assert_eq!(back.seq, 42);
                assert_eq!(back.except, except);
                assert_eq!(back.message, message);
            }
        }
    }

    #[test]
    fn bad_bodies_are_refused_not_panicked_on() {
        let good = encode(Uuid::new_v4(), 1, Some(Uuid::new_v4()), &"x".into());
        for len in 0..good.len() - 1 {
            // Any truncation before the payload is refused.
            if len < 43 {
                assert_eq!(decode(good.slice(..len)), None, "{len}");
            }
        }
        let mut bad = good.to_vec();
        bad[0] = 9;
        assert_eq!(decode(bad.into()), None);
        let mut invalid_text = encode(Uuid::new_v4(), 1, None, &"x".into()).to_vec();
        invalid_text.push(0xff);
        assert_eq!(decode(invalid_text.into()), None);
    }

    #[test]
    fn published_messages_split_into_offset_epoch_and_body() {
        let (offset, epoch, body) = split_published(b"17 ab12 \x01 rest").unwrap();
        assert_eq!(
            (offset, epoch.as_str(), &body[..]),
            (17, "ab12", &b"\x01 rest"[..])
        );
        assert_eq!(split_published(b"x y z"), None);
        assert_eq!(split_published(b"12"), None);
        assert_eq!(entry_offset("12-0"), Some(12));
        assert_eq!(entry_offset("nope"), None);
    }
}
