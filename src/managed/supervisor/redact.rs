//! redact: keeps a worker's local token out of its log. SDKs print the engine URL they
//! connect to (the Node SDK's telemetry does, on every connect), and that URL carries the
//! token, so each output stream passes through a [`Redactor`] before it reaches the log.
//!
//! A token split across two reads is still found: the end of a read that could be the start
//! of the token is held back until the next read (or the end of the stream) shows whether
//! it is.

use std::borrow::Cow;

/// What a worker's log shows where its local token was.
pub const HIDDEN: &[u8] = b"<local-token>";

/// Replaces one secret in a stream of output chunks.
pub struct Redactor {
    secret: Vec<u8>,
    /// The end of the last chunk, which may be the start of the secret.
    held: Vec<u8>,
}

impl Redactor {
    /// A redactor of `secret`; `None` (or an empty secret) passes everything through.
    pub fn new(secret: Option<&str>) -> Self {
        Redactor {
            secret: secret.unwrap_or_default().as_bytes().to_vec(),
            held: Vec::new(),
        }
    }

    /// The part of the output so far that can be shown now.
    pub fn feed<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secret.is_empty() {
            return Cow::Borrowed(chunk);
        }
        let mut text = std::mem::take(&mut self.held);
        text.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        let first = self.secret[0];
        while at < text.len() {
            // Copy up to the next byte that could start the secret in one go.
            let skip = text[at..]
                .iter()
                .position(|b| *b == first)
                .unwrap_or(text.len() - at);
            out.extend_from_slice(&text[at..at + skip]);
            at += skip;
            let rest = &text[at..];
            if rest.is_empty() {
                break;
            }
            if rest.starts_with(&self.secret) {
                out.extend_from_slice(HIDDEN);
                at += self.secret.len();
            } else if self.secret.starts_with(rest) {
                // The whole rest could be the start of the secret: wait for more.
                self.held = rest.to_vec();
                break;
            } else {
                out.push(first);
                at += 1;
            }
        }
        Cow::Owned(out)
    }

    /// What is still held back, once the stream has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secret: Option<&str>, chunks: &[&str]) -> String {
        let mut redactor = Redactor::new(secret);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&redactor.feed(chunk.as_bytes()));
        }
        out.extend(redactor.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_secret_is_hidden_wherever_the_reads_split_it() {
        let secret = "s3cr3t";
        let line = "url ws://h/?token=s3cr3t and s3cr3t again\n";
        let expected = "url ws://h/?token=<local-token> and <local-token> again\n";
        for cut in 0..=line.len() {
            let (a, b) = line.split_at(cut);
            assert_eq!(run(Some(secret), &[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<String> = line.chars().map(String::from).collect();
        let one_by_one: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(run(Some(secret), &one_by_one), expected);
    }

    #[test]
    fn near_misses_and_a_trailing_prefix_come_out_unchanged() {
        assert_eq!(run(Some("abc"), &["aab", "abx ab"]), "aababx ab");
        assert_eq!(run(Some("abc"), &["xa", "b"]), "xab");
        assert_eq!(run(None, &["abc"]), "abc");
        let mut redactor = Redactor::new(Some("abc"));
        assert_eq!(&redactor.feed(b"1 a")[..], b"1 ");
        assert_eq!(&redactor.feed(b"bc 2")[..], b"<local-token> 2");
    }
}
