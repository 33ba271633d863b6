//! Header fields: storage with case-insensitive lookup, and the parsers for
//! comma lists, extension offers and cookies.

/// The header fields of a request or response, in arrival order, repeats
/// kept. Lookup ignores ASCII case.
///
/// ```
/// use hubbub_proto::handshake::Headers;
/// let mut headers = Headers::default();
/// headers.append("X-Tag", b"a");
/// headers.append("x-tag", b"b");
/// assert_eq!(headers.get("X-TAG"), Some("a"));
/// assert_eq!(headers.get_all("x-tag").collect::<Vec<_>>(), ["a", "b"]);
/// ```
#[derive(Clone, Default)]
pub struct Headers {
    /// Every field in one buffer, one allocation per head (a connection
    /// keeps its request's fields for its whole life): per field, the
    /// name's length and the value's length, each a LEB128 number (one byte
    /// below 128, two below 16,384), then the name and the value. A
    /// request keeps its request line here too, as a first field with an
    /// empty name (no header field has one), hidden from every lookup.
    text: Vec<u8>,
}

/// Equal when they have the same fields in the same order (a request's
/// line, kept among them, does not count).
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.fields().eq(other.fields())
    }
}

impl Eq for Headers {}

/// Appends `n` as a LEB128 number.
fn put_length(text: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        text.push((n as u8) | 0x80);
        n >>= 7;
    }
    text.push(n as u8);
}

/// Reads a LEB128 number at the front of `text`, advancing it.
fn take_length(text: &mut &[u8]) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some((&byte, rest)) = text.split_first() {
        *text = rest;
        n |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

/// The encoded size of `n` as a LEB128 number.
fn length_size(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

impl Headers {
    /// The fields of a parsed head, in one allocation, sized exactly.
    pub(crate) fn from_fields(fields: &[httparse::Header<'_>]) -> Self {
        Self::with_line(&[], fields.iter().map(|f| (f.name, f.value)))
    }

    /// The fields, sized exactly, after `line` (the request line's parts,
    /// kept as one hidden field) unless it is empty.
    pub(crate) fn with_line<'a>(
        line: &[&str],
        fields: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    ) -> Self {
        let size =
            |name: usize, value: usize| length_size(name) + length_size(value) + name + value;
        let line_len: usize = line.iter().map(|part| part.len()).sum();
        let line_size = if line.is_empty() {
            0
        } else {
            size(0, line_len)
        };
        let bytes = line_size
            + fields
                .clone()
                .map(|(name, value)| size(name.len(), value.len()))
                .sum::<usize>();
        let mut headers = Self {
            text: Vec::with_capacity(bytes),
        };
        if !line.is_empty() {
            headers.push("", line_len, line.iter().map(|part| part.as_bytes()));
        }
        for (name, value) in fields {
            headers.append(name, value);
        }
        headers
    }

    /// The request line kept by [`Headers::with_line`], if any.
    pub(crate) fn line(&self) -> &str {
        match self.all_fields().next() {
            Some((b"", line)) => std::str::from_utf8(line).unwrap_or_default(),
            _ => "",
        }
    }

    /// Adds a field at the end (one with an empty name, which no header
    /// field has, is not found by any lookup).
    pub fn append(&mut self, name: &str, value: &[u8]) {
        self.push(name, value.len(), [value]);
    }

    /// Adds a field whose value is `parts` back to back, `len` bytes.
    fn push<'a>(&mut self, name: &str, len: usize, parts: impl IntoIterator<Item = &'a [u8]>) {
        put_length(&mut self.text, name.len());
        put_length(&mut self.text, len);
        self.text.extend_from_slice(name.as_bytes());
        for part in parts {
            self.text.extend_from_slice(part);
        }
    }

    /// Every field as raw name and raw value, in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.all_fields().filter(|(name, _)| !name.is_empty())
    }

    /// [`Headers::fields`] and the request line.
    fn all_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        let mut rest = &self.text[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let name_len = take_length(&mut rest);
            let value_len = take_length(&mut rest);
            // Only `append` writes the buffer: the lengths fit.
            let (name, after) = rest.split_at(name_len.min(rest.len()));
            let (value, after) = after.split_at(value_len.min(after.len()));
            rest = after;
            Some((name, value))
        })
    }

    /// Every field as name and raw value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        // Names come in as `&str` and are stored whole.
        self.fields()
            .map(|(name, value)| (std::str::from_utf8(name).unwrap_or_default(), value))
    }

    /// The raw values of `name`, in order (names compared as bytes: no
    /// UTF-8 check per field on a lookup).
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name).find_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` as raw bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Every UTF-8 value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// How many fields `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.values(name).count()
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields().count()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields().next().is_none()
    }

    /// The comma-separated elements of every value of `name`, trimmed, empty
    /// ones skipped.
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
    }

    /// Whether a comma list field holds `token`, ignoring ASCII case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name).any(|item| item.eq_ignore_ascii_case(token))
    }
}

/// One offer from a `Sec-WebSocket-Extensions` field: an extension name and
/// its parameters, quoted values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension's name, such as `permessage-deflate`.
    pub name: String,
    /// The parameters in order: name and optional value.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A cursor over one field value.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| std::str::from_utf8(&self.bytes[start..self.pos]).ok())?
    }

    fn quoted(&mut self) -> Option<String> {
        // At the opening quote.
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(value).ok();
                }
                b'\\' => {
                    value.push(*self.bytes.get(self.pos + 1)?);
                    self.pos += 2;
                }
                c => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Skips to just past the next comma outside quotes.
    fn recover(&mut self) {
        let mut quoted = false;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.pos += 1,
                b',' if !quoted => return,
                _ => {}
            }
        }
    }

    /// One extension offer, ending at a comma or the end.
    fn offer(&mut self) -> Option<ExtensionOffer> {
        self.skip_ws();
        let name = self.token()?.to_owned();
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Some(ExtensionOffer { name, params }),
                Some(b',') => {
                    self.pos += 1;
                    return Some(ExtensionOffer { name, params });
                }
                Some(b';') => self.pos += 1,
                Some(_) => return None,
            }
            self.skip_ws();
            let key = self.token()?.to_owned();
            self.skip_ws();
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b'"') {
                    Some(self.quoted()?)
                } else {
                    Some(self.token()?.to_owned())
                }
            } else {
                None
            };
            params.push((key, value));
        }
    }
}

/// Parses a `Sec-WebSocket-Extensions` value into offers, appending them to
/// `offers`. A malformed offer is skipped (declined), not fatal.
pub(crate) fn parse_extensions(value: &str, offers: &mut Vec<ExtensionOffer>) {
    let mut cursor = Cursor {
        bytes: value.as_bytes(),
        pos: 0,
    };
    loop {
        cursor.skip_ws();
        match cursor.peek() {
            None => return,
            Some(b',') => {
                cursor.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let start = cursor.pos;
        match cursor.offer() {
            Some(offer) => offers.push(offer),
            None => {
                cursor.pos = start;
                cursor.recover();
            }
        }
    }
}

/// Parses `Cookie` values into name/value pairs, in order.
pub(crate) fn parse_cookies<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    values
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()).then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {

    /// Fields of every length class of the encoding (one, two and three
    /// bytes of length, and empty) come back as they went in, in order.
    #[test]
    fn fields_of_any_length_come_back_whole() {
        let sizes = [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000];
        let mut headers = Headers::default();
        let mut expected = Vec::new();
        for (i, &name_len) in sizes.iter().enumerate() {
            let value_len = sizes[sizes.len() - 1 - i];
            let name = "n".repeat(name_len.max(1)) + &i.to_string();
            let value = vec![b'a' + i as u8; value_len];
            headers.append(&name, &value);
            expected.push((name, value));
        }
        assert_eq!(headers.len(), sizes.len());
        let got: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(headers.get_bytes(&expected[3].0), Some(&expected[3].1[..]));
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            usize::from(u16::MAX),
            1 << 30,
        ] {
            let mut text = Vec::new();
            put_length(&mut text, n);
            assert_eq!(text.len(), length_size(n));
            assert_eq!(take_length(&mut &text[..]), n);
        }
    }

    use super::*;

    fn offers(value: &str) -> Vec<ExtensionOffer> {
        let mut out = Vec::new();
        parse_extensions(value, &mut out);
        out
    }

    #[test]
    fn extensions_parse_names_params_and_quoted_values() {
        let parsed = offers(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", \
             permessage-deflate ;server_no_context_takeover, x-foo; a=\"q\\\"uote, comma\"",
        );
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].name, "permessage-deflate");
        assert_eq!(
            parsed[0].params,
            vec![
                ("client_max_window_bits".to_owned(), None),
                ("server_max_window_bits".to_owned(), Some("10".to_owned()))
            ]
        );
        assert_eq!(
            parsed[1].params,
            vec![("server_no_context_takeover".to_owned(), None)]
        );
        assert_eq!(
            parsed[2].params,
            vec![("a".to_owned(), Some("q\"uote, comma".to_owned()))]
        );
    }

    #[test]
    fn extensions_malformed_offer_is_skipped_not_fatal() {
        let parsed = offers("bad offer here, good; x=1, =oops, ok");
        let names: Vec<_> = parsed.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["good", "ok"]);
        assert!(offers("a; b=\"unterminated").is_empty());
    }

    #[test]
    fn cookies_split_on_semicolons_across_fields() {
        let cookies = parse_cookies(["a=1; b = two", "c=x=y; junk"].into_iter());
        assert_eq!(
            cookies,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "two".to_owned()),
                ("c".to_owned(), "x=y".to_owned())
            ]
        );
    }
}
