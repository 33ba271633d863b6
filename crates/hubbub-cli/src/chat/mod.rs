//! `hubbub serve`: the seed's chat, with rooms, nicknames, a JSON mode and
//! its web page.
//!
//! A room is chosen by the URL path (`/` is `lobby`) and is two topics:
//! `<room>#text` for clients that read the seed's plain lines and
//! `<room>#json` for clients that asked for `?format=json` (the page does).
//! Every announcement is encoded once per format and published to each
//! topic, so a message to a thousand members is two encodings.
//!
//! With `--redis` the rooms span every node sharing that Redis
//! ([`cluster`]): JSON events carry the room's `offset` and `epoch`, a
//! client that reconnects with `?since=OFFSET&epoch=EPOCH` first gets what
//! it missed, and member counts are the cluster's.

mod identity;

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hubbub::{Connection, HttpResponse, Message, Request, ServerHandle, Socket};
use hubbub_redis::{Envelope, Notice, Position, RedisBroker, RedisConfig};
use serde_json::json;

/// The page and its script, embedded in the binary.
const PAGE: &str = include_str!("../chat.html");
const SCRIPT: &str = include_str!("../chat.js");

/// The page's policy: its own script only (no inline script), sockets to
/// its own origin only, never inside another site's frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The room when the path is `/`.
const DEFAULT_ROOM: &str = "lobby";

/// Nicknames in use, per room (on this node).
static NICKS: LazyLock<identity::Nicks> = LazyLock::new(identity::Nicks::default);

/// What the chat keeps about a member (the connection's user data).
#[derive(Clone)]
struct Member {
    name: String,
    room: String,
}

/// The room a path names: `/` is the lobby, `/<name>` a room whose name is
/// 1–32 letters, digits, `-` or `_`.
pub(crate) fn room_of(path: &str) -> Option<String> {
    let name = path.strip_prefix('/')?.trim_end_matches('/');
    if name.is_empty() {
        return Some(DEFAULT_ROOM.to_owned());
    }
    let valid = name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| name.to_owned())
}

fn wants_json(conn: &Connection) -> bool {
    conn.info()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"))
}

/// A query parameter's value (not percent-decoded: the chat's own
/// parameters are digits and hex).
fn query_param<'a>(conn: &'a Connection, name: &str) -> Option<&'a str> {
    conn.info()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `?since=OFFSET&epoch=EPOCH`: where a reconnecting page left off.
fn position(conn: &Connection) -> Option<Position> {
    Some(Position {
        offset: query_param(conn, "since")?.parse().ok()?,
        epoch: query_param(conn, "epoch")?.to_owned(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn topics(room: &str) -> (String, String) {
    (format!("{room}#text"), format!("{room}#json"))
}

/// The cluster's broker, when `hubbub serve --redis` made this node a
/// member of one.
static BROKER: OnceLock<Arc<RedisBroker>> = OnceLock::new();

/// Members in a room, both formats (on every node, with a broker).
fn count(local: impl Fn(&str) -> usize, room: &str) -> usize {
    let (text, json) = topics(room);
    match BROKER.get() {
        Some(broker) => broker.members(&text) + broker.members(&json),
        None => local(&text) + local(&json),
    }
}

/// The room of a topic, and whether it is the JSON one.
fn room_of_topic(topic: &str) -> Option<(&str, bool)> {
    if let Some(room) = topic.strip_suffix("#json") {
        return Some((room, true));
    }
    topic.strip_suffix("#text").map(|room| (room, false))
}

/// Where the nodes' Redis is.
pub(crate) enum RedisAt<'a> {
    /// One Redis.
    One(&'a str),
    /// Some nodes of a Redis Cluster.
    Cluster(&'a [String]),
}

/// Makes this node a cluster member through `redis`: JSON
/// events get the room's offset and epoch, lost history is announced in
/// each format, and member counts are pushed to the page when they change.
pub(crate) fn cluster(redis: &RedisAt<'_>) -> Result<Arc<RedisBroker>, String> {
    let config = RedisConfig::default()
        .with_render(render)
        .with_notice(notice)
        .on_presence(|server, topic, _| {
            let Some((room, _)) = room_of_topic(topic) else {
                return;
            };
            let count = count(|topic| server.subscriber_count(topic), room);
            let event = json!({"type": "presence", "count": count, "ts": now_ms()});
            server.publish_local(&topics(room).1, event.to_string(), None);
        });
    let broker = match redis {
        RedisAt::One(url) => RedisBroker::new(url, config),
        RedisAt::Cluster(urls) => RedisBroker::cluster(urls, config),
    }
    .map_err(|e| e.to_string())?;
    let _ = BROKER.set(broker.clone());
    Ok(broker)
}

/// Puts `offset` and `epoch` into a JSON event (`{"offset":…,"epoch":…,…}`).
fn render(envelope: &Envelope) -> Message {
    let json = matches!(room_of_topic(&envelope.topic), Some((_, true)));
    match &envelope.message {
        Message::Text(text) if json && envelope.offset > 0 && text.starts_with('{') => {
            let rest = &text[1..];
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            Message::from(format!(
                r#"{{"offset":{},"epoch":{}{sep}{rest}"#,
                envelope.offset,
                serde_json::Value::from(envelope.epoch.as_str())
            ))
        }
        other => other.clone(),
    }
}

/// What a room is told when its order could not be kept whole.
fn notice(notice: &Notice) -> Option<Message> {
    if let Notice::Offset {
        topic,
        offset,
        epoch,
    } = notice
    {
        // Only the page keeps a position; the text format has no use for it.
        return matches!(room_of_topic(topic), Some((_, true))).then(|| {
            Message::from(json!({"type": "offset", "offset": offset, "epoch": epoch}).to_string())
        });
    }
    let (topic, text): (&str, String) = match notice {
        Notice::Gap { topic, from, to } => (
            topic,
            format!("Messages {from} to {to} of this room are lost: no longer in the history."),
        ),
        Notice::EpochChanged { topic, .. } => (
            topic,
            "This room's history started over: earlier messages may be missing.".to_owned(),
        ),
        Notice::Unavailable { topic } => (
            topic,
            "The cluster could not be reached: messages may be missing.".to_owned(),
        ),
        _ => return None,
    };
    let kind = match notice {
        Notice::Gap { .. } => "gap",
        Notice::EpochChanged { .. } => "epoch",
        Notice::Unavailable { .. } => "unavailable",
        _ => return None,
    };
    match room_of_topic(topic) {
        Some((_, true)) => {
            let mut event = json!({"type": kind, "text": text, "ts": now_ms()});
            match notice {
                Notice::Gap { from, to, .. } => {
                    event["from"] = json!(from);
                    event["to"] = json!(to);
                }
                Notice::EpochChanged { epoch, .. } => event["epoch"] = json!(epoch),
                _ => {}
            }
            Some(Message::from(event.to_string()))
        }
        _ => Some(Message::from(text)),
    }
}

/// Publishes one announcement to a room in both formats, optionally not to
/// `except`.
fn announce(
    server: &ServerHandle,
    room: &str,
    line: String,
    event: serde_json::Value,
    except: Option<&Connection>,
) {
    let (text, json) = topics(room);
    let event = event.to_string();
    match except {
        Some(conn) => {
            server.publish_except(&text, line, conn);
            server.publish_except(&json, event, conn);
        }
        None => {
            server.publish(&text, line);
            server.publish(&json, event);
        }
    }
}

/// Sends a line (or its JSON form) to one member.
fn tell(conn: &Connection, line: &str, event: serde_json::Value) {
    let _ = if wants_json(conn) {
        conn.send(event.to_string())
    } else {
        conn.send(line)
    };
}

/// The per-connection setup of the chat.
pub(crate) fn setup(socket: &mut Socket) {
    socket.on_open(|conn| {
        let server = conn.server();
        let Some(room) = room_of(conn.info().path()) else {
            let _ = conn.close_with(1008, "invalid room name");
            return;
        };
        let name = conn.id().to_string();
        conn.set_data(Member {
            name: name.clone(),
            room: room.clone(),
        });
        let (text, json) = topics(&room);
        let topic = if wants_json(conn) { &json } else { &text };
        match BROKER.get() {
            Some(broker) => {
                // Count both formats' members on every node.
                broker.watch(&text);
                broker.watch(&json);
                broker.resume(conn, topic, position(conn));
            }
            None => {
                let _ = conn.subscribe(topic);
            }
        }
        let members = count(|t| server.subscriber_count(t), &room);
        let welcome = "You have just joined the conversation.";
        tell(
            conn,
            welcome,
            json!({"type": "welcome", "id": name, "name": name, "room": room,
                   "count": members, "text": welcome, "ts": now_ms()}),
        );
        let line = format!("{name} joined the conversation.");
        let event = json!({"type": "join", "from": name, "count": members,
                           "text": line, "ts": now_ms()});
        announce(&server, &room, line, event, Some(conn));
    });
    socket.on_message(|conn, text| {
        let Some(member) = conn.data::<Member>() else {
            return;
        };
        let server = conn.server();
        if let Some(nick) = text.strip_prefix("/nick") {
            return rename(conn, &server, member, nick.trim());
        }
        if identity::is_blank(&text) {
            return;
        }
        // One message, one line: control characters are shown escaped in
        // the text format (JSON carries the text as it came).
        let line = format!("{} says: {}", member.name, identity::one_line(&text));
        let event = json!({"type": "message", "from": member.name, "id": conn.id().to_string(),
                           "text": text.as_str(), "ts": now_ms()});
        announce(&server, &member.room, line, event, None);
    });
    socket.on_close(|conn, _| {
        let Some(member) = conn.data::<Member>() else {
            return;
        };
        NICKS.release(&member.room, conn.id(), &member.name);
        let server = conn.server();
        if let Some(broker) = BROKER.get() {
            let (text, json) = topics(&member.room);
            if server.subscriber_count(&text) + server.subscriber_count(&json) == 0 {
                broker.unwatch(&text);
                broker.unwatch(&json);
            }
        }
        let line = format!("{} left the chat room.", member.name);
        let event = json!({"type": "leave", "from": member.name, "count": count(|t| server.subscriber_count(t), &member.room),
                           "text": line, "ts": now_ms()});
        announce(&server, &member.room, line, event, None);
    });
}

/// `/nick NAME`: a new display name, announced to the room.
fn rename(conn: &Connection, server: &ServerHandle, member: Member, nick: &str) {
    let id = conn.id();
    let previous = (member.name != id.to_string()).then_some(member.name.as_str());
    let checked =
        identity::check_nick(nick).and_then(|()| NICKS.claim(&member.room, id, nick, previous));
    if let Err(error) = checked {
        tell(
            conn,
            &error,
            json!({"type": "error", "text": error, "ts": now_ms()}),
        );
        return;
    }
    let old = member.name;
    conn.set_data(Member {
        name: nick.to_owned(),
        room: member.room.clone(),
    });
    let line = format!("{old} is now known as {nick}.");
    let event = json!({"type": "nick", "from": old, "to": nick, "text": line, "ts": now_ms()});
    announce(server, &member.room, line, event, None);
}

/// Plain HTTP on the chat's port: the page for `/` and `/<room>`, and its
/// script.
pub(crate) fn http(request: &Request) -> HttpResponse {
    let (content_type, body) = if request.path() == "/chat.js" {
        ("text/javascript; charset=utf-8", SCRIPT)
    } else if room_of(request.path()).is_some() {
        ("text/html; charset=utf-8", PAGE)
    } else {
        return HttpResponse::new(404)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("not found\n");
    };
    HttpResponse::new(200)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Content-Security-Policy", CSP)
        .body(body)
}

/// Refuses an upgrade to a path that names no room, before the `101`.
pub(crate) async fn handshake(request: hubbub::HandshakeRequest) -> hubbub::Decision {
    if room_of(request.request.path()).is_none() {
        tracing::info!(peer = %request.peer, path = request.request.path(), "no such room: 404");
        return hubbub::Decision::reject(
            404,
            "no such room: a room name is 1-32 letters, digits, - or _",
        );
    }
    hubbub::Decision::accept()
}

#[cfg(test)]
mod tests {
    use super::room_of;

    #[test]
    fn rooms_come_from_the_path() {
        assert_eq!(room_of("/").as_deref(), Some("lobby"));
        assert_eq!(room_of("/rust-users").as_deref(), Some("rust-users"));
        assert_eq!(room_of("/a_b/").as_deref(), Some("a_b"));
        assert_eq!(room_of("/a/b"), None);
        assert_eq!(room_of("/%3Cx%3E"), None);
        assert_eq!(room_of(&format!("/{}", "x".repeat(33))), None);
    }
}
