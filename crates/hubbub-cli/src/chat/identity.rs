//! Who says what in the chat: nicknames that cannot pass for someone else,
//! and message text that cannot forge a line.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use hubbub::Uuid;
use unicode_normalization::UnicodeNormalization;

/// Longest nickname, in characters.
pub(crate) const MAX_NICK: usize = 32;

/// Why a nickname was refused: one line for the member.
pub(crate) fn check_nick(nick: &str) -> Result<(), String> {
    let length = nick.chars().count();
    if length == 0 || length > MAX_NICK {
        return Err(format!(
            "A nickname is 1 to {MAX_NICK} characters: /nick NAME"
        ));
    }
    if let Some(c) = nick
        .chars()
        .find(|&c| !(c.is_alphanumeric() || c == ' ' || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "A nickname is letters, digits, spaces and - _ . only (not {:?}).",
            c
        ));
    }
    if nick.starts_with(' ') || nick.ends_with(' ') || nick.contains("  ") {
        return Err("A nickname has no spaces at its ends and no double spaces.".into());
    }
    if looks_like_an_id(nick) {
        return Err("A nickname may not look like a member's id.".into());
    }
    Ok(())
}

/// Whether `nick` could be (the start of) a member id: a UUID's shape,
/// hex digits with hyphens where a UUID has them, from 6 characters on.
fn looks_like_an_id(nick: &str) -> bool {
    const HYPHENS: [usize; 4] = [8, 13, 18, 23];
    nick.chars().count() >= 6
        && nick.len() <= 36
        && nick.char_indices().all(|(i, c)| {
            if HYPHENS.contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The form two nicknames are compared in: compatibility-normalised and
/// case-folded, so that "Alice", "ALICE" and "Ａｌｉｃｅ" are one name.
fn key(nick: &str) -> String {
    nick.nfkc().flat_map(char::to_lowercase).collect()
}

/// Nicknames in use, per room: (room, key) → member.
#[derive(Default)]
pub(crate) struct Nicks(Mutex<HashMap<(String, String), Uuid>>);

impl Nicks {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Uuid>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `nick` to `id` in `room`, releasing `old` (its previous
    /// nickname, if any); refuses a name another member holds.
    pub(crate) fn claim(
        &self,
        room: &str,
        id: Uuid,
        nick: &str,
        old: Option<&str>,
    ) -> Result<(), String> {
        let mut nicks = self.lock();
        let entry = (room.to_owned(), key(nick));
        match nicks.get(&entry) {
            Some(holder) if *holder != id => {
                return Err(format!("{nick} is taken in this room."));
            }
            _ => {}
        }
        if let Some(old) = old {
            let old = (room.to_owned(), key(old));
            if nicks.get(&old) == Some(&id) {
                nicks.remove(&old);
            }
        }
        nicks.insert(entry, id);
        Ok(())
    }

    /// Releases `nick` when `id` leaves `room`.
    pub(crate) fn release(&self, room: &str, id: Uuid, nick: &str) {
        let mut nicks = self.lock();
        let entry = (room.to_owned(), key(nick));
        if nicks.get(&entry) == Some(&id) {
            nicks.remove(&entry);
        }
    }
}

/// A message as the plain-text format shows it: control characters (line
/// breaks, escape sequences…) escaped, so that one message is one line and
/// cannot pass for another member's.
pub(crate) fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into()
}

/// Whether a message says nothing (not broadcast).
pub(crate) fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_that_pass_for_someone_else_are_refused() {
        for good in [
            "alice",
            "Ada Lovelace",
            "bob_2",
            "jean-luc",
            "R.D.",
            "Zoë",
            "李雷",
            "cafe",
        ] {
            assert!(check_nick(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "alice\u{202e}",      // bidi override
            "al\u{200b}ice",      // zero-width space
            "alice says: hi",     // a forged line
            "3f2a9c1e-7b4d-4c1a", // an id's prefix
            "3f2a9c1e",
            "a\nb",
            " alice",
            "alice  b",
            &"x".repeat(33),
        ] {
            assert!(check_nick(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_nickname_per_room_whatever_its_case_or_width() {
        let nicks = Nicks::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        nicks.claim("lobby", a, "alice", None).unwrap();
        assert!(nicks.claim("lobby", b, "ALICE", None).is_err());
        assert!(
            nicks.claim("lobby", b, "Ａｌｉｃｅ", None).is_err(),
            "full-width"
        );
        nicks.claim("rust", b, "alice", None).unwrap();
        nicks.claim("lobby", a, "Alice", Some("alice")).unwrap();
        nicks.claim("lobby", a, "ada", Some("Alice")).unwrap();
        nicks.claim("lobby", b, "alice", None).unwrap();
        nicks.release("lobby", b, "alice");
        nicks.claim("lobby", a, "alice", Some("ada")).unwrap();
    }

    #[test]
    fn a_message_is_one_line_in_the_text_format() {
        assert_eq!(one_line("hi"), "hi");
        assert_eq!(
            one_line("hi\nalice says: send money\r\x1b[2J"),
            "hi\\nalice says: send money\\r\\u{1b}[2J"
        );
        assert!(is_blank(" \t"));
        assert!(!is_blank(" a "));
    }
}
