//! Where a body's bytes end as they pass through the HTTP/1.1 loop (DESIGN.md §19): the
//! request body's progress (Content-Length counted down, chunked validated as it is relayed)
//! and the response body's (the same, plus close-delimited bodies, and de-chunking for an
//! HTTP/1.0 client). Framing is decided by the codec; this only walks it over the bytes.
//!
//! Owns: how many of the bytes in a buffer belong to the body, and when it is done. Must not
//! touch: sockets, statuses.

use std::ops::Range;

use smallvec::SmallVec;

use crate::h1::{Chunked, ChunkedError, Framing};

/// One step over a piece of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input that belong to the body (forwarded as they are, unless de-chunked).
    pub consumed: usize,
    /// The body ended within them.
    pub done: bool,
}

/// A body's progress.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    /// Content-Length bytes still to come.
    remaining: u64,
    chunked: Option<Chunked>,
    done: bool,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        let (remaining, chunked) = match framing {
            Framing::Length(n) => (n, None),
            Framing::Chunked => (0, Some(Chunked::new())),
            Framing::None | Framing::UntilClose => (0, None),
        };
        Body {
            framing,
            remaining,
            chunked,
            done: !framing.has_body(),
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The body's data bytes so far, as far as they are known (for a chunked body, declared
    /// sizes of chunks begun: a chunk over a limit is seen before its data is relayed).
    pub fn data_len(&self, taken: u64) -> u64 {
        match &self.chunked {
            Some(c) => c.data_len(),
            None => taken,
        }
    }

    /// Walks the next bytes of the body: how many belong to it and whether it ended. A chunked
    /// body's data ranges (relative to `input`) go to `data` (for de-chunking). A malformed
    /// chunked body is an error: nothing more of it may be relayed.
    pub fn step(
        &mut self,
        input: &[u8],
        data: Option<&mut SmallVec<[Range<usize>; 4]>>,
    ) -> Result<Step, ChunkedError> {
        if self.done {
            return Ok(Step {
                consumed: 0,
                done: true,
            });
        }
        let step = match self.framing {
            Framing::None => Step {
                consumed: 0,
                done: true,
            },
            Framing::Length(_) => {
                let n = (input.len() as u64).min(self.remaining);
                self.remaining -= n;
                Step {
                    consumed: n as usize,
                    done: self.remaining == 0,
                }
            }
            Framing::UntilClose => Step {
                consumed: input.len(),
                done: false,
            },
            Framing::Chunked => {
                let c = self
                    .chunked
                    .as_mut()
                    .expect("a chunked body has its validator");
                let p = match data {
                    Some(ranges) => c.feed(input, |r| ranges.push(r))?,
                    None => c.feed(input, |_| {})?,
                };
                Step {
                    consumed: p.consumed,
                    done: p.done,
                }
            }
        };
        self.done = step.done;
        Ok(step)
    }

    /// A close-delimited body ends at the close.
    pub fn closed(&mut self) -> bool {
        if self.framing == Framing::UntilClose {
            self.done = true;
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_down_and_leave_what_follows() {
        let mut b = Body::new(Framing::Length(5));
        assert_eq!(
            b.step(b"abc", None),
            Ok(Step {
                consumed: 3,
                done: false
            })
        );
        assert_eq!(
            b.step(b"deGET /", None),
            Ok(Step {
                consumed: 2,
                done: true
            })
        );
        assert!(b.is_done());
    }

    #[test]
    fn chunked_bodies_end_at_their_last_chunk_and_bad_ones_fail() {
        let mut b = Body::new(Framing::Chunked);
        let mut ranges = SmallVec::new();
        let s = b
            .step(b"3\r\nabc\r\n0\r\n\r\nGET", Some(&mut ranges))
            .unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 13,
                done: true
            }
        );
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0], 3..6);
        let mut b = Body::new(Framing::Chunked);
        assert!(b.step(b"zz\r\n", None).is_err());
    }

    #[test]
    fn bodiless_and_close_delimited() {
        assert!(Body::new(Framing::None).is_done());
        assert!(Body::new(Framing::Length(0)).is_done());
        let mut b = Body::new(Framing::UntilClose);
        assert!(!b.step(b"xyz", None).unwrap().done);
        assert!(b.closed());
    }
}
