//! Finding the end of an HTTP head in a growing buffer, in linear time.

/// Remembers how far a growing buffer was already searched for the blank
/// line, so that a head trickling in byte by byte costs linear time overall.
#[derive(Debug, Default, Clone)]
pub(crate) struct HeadFinder {
    scanned: usize,
}

/// What the search found.
pub(crate) enum HeadEnd {
    /// The head is `n` bytes long, blank line included.
    Complete(usize),
    /// Not yet: more bytes are needed.
    Partial,
    /// No blank line within the first `limit` bytes.
    TooLarge,
}

impl HeadFinder {
    /// Searches `buf` (which only ever grows between calls) for the end of
    /// the head, looking at no more than `limit` bytes.
    pub(crate) fn find(&mut self, buf: &[u8], limit: usize) -> HeadEnd {
        let end = buf.len().min(limit);
        let start = self.scanned.min(end);
        for (offset, &byte) in buf[start..end].iter().enumerate() {
            if byte != b'\n' {
                continue;
            }
            let i = start + offset;
            let bare = i >= 1 && buf[i - 1] == b'\n';
            let crlf = i >= 3 && &buf[i - 3..i] == b"\r\n\r";
            if bare || crlf {
                self.scanned = 0;
                return HeadEnd::Complete(i + 1);
            }
        }
        self.scanned = end;
        if buf.len() >= limit {
            HeadEnd::TooLarge
        } else {
            HeadEnd::Partial
        }
    }
}
