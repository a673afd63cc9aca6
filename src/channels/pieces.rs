//! Large channel frames cross between nodes in pieces.
//!
//! Why: the silence check on a cross-node channel stream ([`super::beat`]) times each whole
//! gRPC message, and beats cannot pass inside one. A frame of many MiB on a slow link would
//! take longer than [`super::beat::SILENT_AFTER`] and close a healthy channel. Sent in pieces
//! of at most [`PIECE_BYTES`], some message (a piece or a beat) arrives well within the limit
//! whenever data flows.

use bytes::{Bytes, BytesMut};

use super::buffer::Item;
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::rpc::pb;
use crate::rpc::pb::channel_frame::Kind;

/// The most bytes of a frame one gRPC message carries.
pub const PIECE_BYTES: usize = 256 * 1024;

/// The gRPC messages carrying `item`: one piece, or several with `more` set on all but the
/// last. Each piece is a slice of the frame's own buffer, made as it is sent: a frame
/// crosses without a copy and without a list of its pieces.
pub fn split(item: Item) -> Pieces {
    let (text, data) = match item {
        Item::Text(text) => (true, Bytes::from(text)),
        Item::Binary(data) => (false, data),
    };
    Pieces {
        text,
        rest: Some(data),
    }
}

/// The pieces of one frame, in order (see [`split`]).
pub struct Pieces {
    text: bool,
    /// What is still to be sent; `None` once the last piece went.
    rest: Option<Bytes>,
}

impl Iterator for Pieces {
    type Item = pb::ChannelFrame;

    fn next(&mut self) -> Option<pb::ChannelFrame> {
        let data = self.rest.as_mut()?;
        let piece = data.split_to(data.len().min(PIECE_BYTES));
        let more = !data.is_empty();
        if !more {
            self.rest = None;
        }
        let kind = if self.text {
            Kind::Text(piece)
        } else {
            Kind::Binary(piece)
        };
        Some(pb::ChannelFrame {
            kind: Some(kind),
            more,
        })
    }
}

/// Joins the pieces of a frame as they arrive.
#[derive(Default)]
pub struct Joiner {
    /// The pieces so far and whether they are text.
    started: Option<(bool, BytesMut)>,
}

impl Joiner {
    /// Takes the next message of a stream: `None` while a frame is still coming, else the
    /// whole message. Pieces that change kind, stop for another message, or add up to more
    /// than a frame may hold come out as a message without a kind (a broken end).
    pub fn join(&mut self, frame: pb::ChannelFrame) -> Option<pb::ChannelFrame> {
        let (text, piece) = match frame.kind {
            Some(Kind::Text(piece)) => (true, piece),
            Some(Kind::Binary(piece)) => (false, piece),
            _ if self.started.is_some() => return Some(broken()),
            _ => return Some(frame),
        };
        if !frame.more && self.started.is_none() {
            return Some(pb::ChannelFrame {
                kind: Some(if text {
                    Kind::Text(piece)
                } else {
                    Kind::Binary(piece)
                }),
                more: false,
            });
        }
        let (kind, joined) = self.started.get_or_insert_with(|| (text, BytesMut::new()));
        if *kind != text || joined.len() + piece.len() > MAX_MESSAGE_BYTES {
            self.started = None;
            return Some(broken());
        }
        joined.extend_from_slice(&piece);
        if frame.more {
            return None;
        }
        let (text, joined) = self.started.take()?;
        let joined = joined.freeze();
        Some(pb::ChannelFrame {
            kind: Some(if text {
                Kind::Text(joined)
            } else {
                Kind::Binary(joined)
            }),
            more: false,
        })
    }
}

/// A message that reads as a broken end.
fn broken() -> pb::ChannelFrame {
    pb::ChannelFrame {
        kind: None,
        more: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::buffer::Popped;
    use crate::channels::ends::popped_of;

    fn rejoined(item: Item) -> Popped {
        let mut joiner = Joiner::default();
        let mut whole = None;
        for piece in split(item) {
            assert!(whole.is_none(), "nothing comes after the last piece");
            whole = joiner.join(piece);
        }
        popped_of(whole.expect("the last piece completes the frame"))
    }

    #[test]
    fn a_large_frame_travels_in_pieces_no_larger_than_the_limit_and_joins_whole() {
        let data = Bytes::from(
            (0..PIECE_BYTES * 3 + 5)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let pieces: Vec<_> = split(Item::Binary(data.clone())).collect();
        assert_eq!(pieces.len(), 4);
        assert!(pieces.iter().all(|piece| match &piece.kind {
            Some(Kind::Binary(bytes)) => bytes.len() <= PIECE_BYTES,
            _ => false,
        }));
        match rejoined(Item::Binary(data.clone())) {
            Popped::Item(Item::Binary(joined)) => assert_eq!(joined, data),
            _ => panic!("a binary frame comes back whole"),
        }
    }

    #[test]
    fn pieces_are_slices_of_the_frame_itself_not_copies() {
        let data = Bytes::from(vec![9u8; PIECE_BYTES + 10]);
        let starts: Vec<*const u8> = split(Item::Binary(data.clone()))
            .map(|piece| match piece.kind {
                Some(Kind::Binary(bytes)) => bytes.as_ptr(),
                _ => panic!("a binary frame goes in binary pieces"),
            })
            .collect();
        assert_eq!(starts, vec![data.as_ptr(), data[PIECE_BYTES..].as_ptr()]);
        // A frame of one piece comes out of the joiner as the very buffer that went in.
        let small = Bytes::from(vec![3u8; 64 * 1024]);
        let mut joiner = Joiner::default();
        let mut pieces = split(Item::Binary(small.clone()));
        let whole = joiner.join(pieces.next().expect("one piece"));
        assert!(pieces.next().is_none());
        match whole.and_then(|frame| frame.kind) {
            Some(Kind::Binary(bytes)) => assert_eq!(bytes.as_ptr(), small.as_ptr()),
            _ => panic!("a small frame joins at once"),
        }
    }

    #[test]
    fn text_split_inside_a_character_joins_whole_and_small_frames_stay_one_piece() {
        let text = "é".repeat(PIECE_BYTES);
        match rejoined(Item::Text(text.clone().into())) {
            Popped::Item(Item::Text(joined)) => assert_eq!(joined.as_str(), text),
            _ => panic!("a text frame comes back whole"),
        }
        assert_eq!(split(Item::Text("hi".into())).count(), 1);
        assert_eq!(split(Item::Binary(Bytes::new())).count(), 1);
    }

    #[test]
    fn pieces_interrupted_by_another_message_are_a_broken_end() {
        let mut joiner = Joiner::default();
        let mut pieces = split(Item::Binary(Bytes::from(vec![1; PIECE_BYTES + 1])));
        let first = pieces.next().expect("a first piece");
        assert!(joiner.join(first).is_none());
        let end = crate::channels::ends::end_frame(crate::channels::buffer::End::Clean);
        let joined = joiner.join(end).expect("an interrupted frame ends");
        assert!(matches!(
            popped_of(joined),
            Popped::End(crate::channels::buffer::End::Broken)
        ));
    }
}
