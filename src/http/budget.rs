//! The receive budget (`server.receive_budget_bytes`): one count of the bytes of request
//! bodies the process holds, from a body's first byte until its notification is accepted.
//!
//! Bodies arrive into [`Pieces`] of one size, each counted whole, so that what is counted
//! is what is allocated, and the allocator reuses the memory of one body for the next
//! whatever their sizes (buffers sized to each body kept every arena at its high water).
//!
//! A body is not authentic until its last byte has arrived, so every body counts, signed
//! or not. When a body's next bytes do not fit, the largest body that has stalled (no byte
//! for [`STALL`]) is evicted if it is larger than that one: its request is answered 503
//! and its bytes are free. So clients that send most of a large body and then hold it
//! cannot keep notifications out, while bodies that are arriving are never cut off for
//! others. Otherwise the body that does not fit is refused (503) and the rest of it is not
//! read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// How long a body must have received nothing before another may evict it.
pub const STALL: Duration = Duration::from_secs(1);

/// Bytes held at once by all bodies, and its ceiling. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReceiveBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: u64,
    state: Mutex<State>,
    /// `waba_gateway_receive_budget_used_bytes`.
    gauge: IntGauge,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    next_id: u64,
    /// Every body that holds a share, by id.
    bodies: HashMap<u64, Share>,
}

#[derive(Debug)]
struct Share {
    bytes: u64,
    /// Still arriving: it may be evicted once stalled.
    arriving: bool,
    /// When its last bytes came (or it began).
    progressed: Instant,
    /// Told when it is evicted.
    evicted: Arc<Notify>,
}

impl ReceiveBudget {
    /// A budget of `limit` bytes, reported through `gauge`.
    pub fn new(limit: u64, gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            inner: Arc::new(Inner {
                limit,
                state: Mutex::new(State::default()),
                gauge,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty share of the budget for a body about to arrive, which [`Held::grow`]
    /// enlarges as its bytes come and which gives them back when dropped.
    pub fn hold(&self) -> Held {
        let evicted = Arc::new(Notify::new());
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.bodies.insert(
            id,
            Share {
                bytes: 0,
                arriving: true,
                progressed: Instant::now(),
                evicted: evicted.clone(),
            },
        );
        Held {
            budget: self.clone(),
            id,
            evicted,
        }
    }
}

/// One body's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: ReceiveBudget,
    id: u64,
    evicted: Arc<Notify>,
}

impl Held {
    /// Takes `bytes` more for this body, evicting a larger stalled body when they do not
    /// fit; `false`, taking nothing, when there is no room and no such body.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let limit = self.budget.inner.limit;
        let mut state = self.budget.state();
        let Some(mine) = state.bodies.get(&self.id).map(|share| share.bytes) else {
            // Evicted already.
            return false;
        };
        let mut freed = 0;
        let now = Instant::now();
        if state.used + bytes > limit {
            let victim = state
                .bodies
                .iter()
                .filter(|(id, share)| {
                    **id != self.id && share.arriving && now - share.progressed >= STALL
                })
                .max_by_key(|(_, share)| share.bytes)
                .filter(|(_, share)| share.bytes > mine + bytes)
                .map(|(id, _)| *id);
            let Some(victim) = victim.and_then(|id| state.bodies.remove(&id)) else {
                return false;
            };
            victim.evicted.notify_one();
            state.used -= victim.bytes;
            freed = victim.bytes;
        }
        state.used += bytes;
        if let Some(share) = state.bodies.get_mut(&self.id) {
            share.bytes += bytes;
            share.progressed = now;
        }
        self.budget.inner.gauge.add(bytes as i64 - freed as i64);
        true
    }

    /// The body has arrived whole: it is no longer evicted for another's room.
    pub fn arrived(&mut self) {
        if let Some(share) = self.budget.state().bodies.get_mut(&self.id) {
            share.arriving = false;
        }
    }

    /// Resolves when another body has taken this one's room: its request is to be
    /// refused, and nothing more read.
    pub fn eviction(&self) -> impl Future<Output = ()> + Send + 'static {
        let evicted = self.evicted.clone();
        async move { evicted.notified().await }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        if let Some(share) = state.bodies.remove(&self.id) {
            state.used -= share.bytes;
            self.budget.inner.gauge.sub(share.bytes as i64);
        }
    }
}

/// The size of the pieces a body arrives into.
pub const PIECE: usize = 16 * 1024;

/// A body as it arrives, in pieces of [`PIECE`] bytes, each taken from the budget as it is
/// allocated.
#[derive(Debug, Default)]
pub struct Pieces {
    pieces: Vec<Vec<u8>>,
    len: usize,
    /// The length the request declared (`Content-Length`), when it did.
    declared: Option<usize>,
}

impl Pieces {
    /// Pieces for a body that declared its length: the last piece is no larger than what
    /// is still to come, so that a body of less than a piece is received into a buffer of
    /// its exact size (most are: nothing to shrink or copy afterwards).
    pub fn expecting(declared: Option<u64>) -> Self {
        Self {
            declared: declared.and_then(|length| usize::try_from(length).ok()),
            ..Self::default()
        }
    }

    /// Copies `data` in, taking a piece from `held` whenever the last one is full; `false`
    /// when the budget has no room for the next piece (what fitted was kept).
    pub fn extend(&mut self, mut data: &[u8], held: &mut Held) -> bool {
        while !data.is_empty() {
            let room = self
                .pieces
                .last()
                .map_or(0, |piece| piece.capacity() - piece.len());
            if room == 0 {
                // A body longer than it declared (the HTTP layer refuses those) still
                // arrives, in whole pieces.
                let size = match self.declared {
                    Some(declared) if declared > self.len => (declared - self.len).min(PIECE),
                    _ => PIECE,
                };
                if !held.grow(size) {
                    return false;
                }
                self.pieces.push(Vec::with_capacity(size));
                continue;
            }
            let (now, rest) = data.split_at(room.min(data.len()));
            if let Some(piece) = self.pieces.last_mut() {
                piece.extend_from_slice(now);
            }
            self.len += now.len();
            data = rest;
        }
        true
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Vec<u8>] {
        &self.pieces
    }

    /// The body in one buffer of its exact size (a piece's spare room would stay
    /// allocated wherever the body is kept: the spool's read-ahead counts the body's
    /// length); the pieces are freed. A body of one piece, as most are, is not copied:
    /// its piece gives its spare room back.
    pub fn into_bytes(self) -> bytes::Bytes {
        match <[Vec<u8>; 1]>::try_from(self.pieces) {
            Ok([mut piece]) => {
                piece.shrink_to_fit();
                piece.into()
            }
            Err(pieces) => pieces.concat().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> (ReceiveBudget, IntGauge) {
        let gauge = IntGauge::new("used", "bytes in use").expect("a gauge");
        (ReceiveBudget::new(limit, gauge.clone()), gauge)
    }

    #[test]
    fn bodies_share_the_budget_and_give_their_bytes_back_when_dropped() {
        let (budget, gauge) = budget(100);
        let mut first = budget.hold();
        let mut second = budget.hold();
        assert!(first.grow(60));
        assert!(second.grow(40));
        assert_eq!(gauge.get(), 100);
        // Full, and no body larger than the one asking: refused, nothing taken.
        assert!(!first.grow(1));
        assert_eq!(gauge.get(), 100);
        drop(first);
        assert_eq!(gauge.get(), 40);
        assert!(second.grow(60));
        drop(second);
        assert_eq!(gauge.get(), 0);
        assert!(budget.hold().grow(100));
        assert_eq!(gauge.get(), 0, "dropped at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_body_evicts_the_largest_stalled_body() {
        let (budget, gauge) = budget(100);
        let mut stalled = budget.hold();
        let mut smaller = budget.hold();
        assert!(stalled.grow(70));
        assert!(smaller.grow(30));
        let mut small = budget.hold();
        // Bodies that are arriving are not cut off for others.
        tokio::time::advance(STALL / 2).await;
        assert!(!small.grow(10));
        tokio::time::advance(STALL / 2).await;
        assert!(small.grow(10), "room made by evicting the 70-byte body");
        assert_eq!(gauge.get(), 40);
        tokio::time::timeout(std::time::Duration::from_secs(1), stalled.eviction())
            .await
            .expect("the evicted body is told");
        assert!(!stalled.grow(1), "an evicted body takes nothing more");
        drop(stalled);
        assert_eq!(gauge.get(), 40, "its bytes were given back once");
        drop((smaller, small));
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_body_arrives_in_pieces_each_counted_whole() {
        let (budget, gauge) = budget(3 * PIECE as u64);
        let mut held = budget.hold();
        let mut pieces = Pieces::default();
        let body: Vec<u8> = (0..2 * PIECE + 10).map(|i| i as u8).collect();
        assert!(pieces.extend(&body[..7], &mut held));
        assert_eq!(gauge.get(), PIECE as i64);
        assert!(pieces.extend(&body[7..], &mut held));
        assert_eq!((pieces.len(), pieces.parts().len()), (body.len(), 3));
        assert_eq!(gauge.get(), 3 * PIECE as i64);
        // No room for a fourth piece: what fitted is kept, nothing more taken.
        let more = vec![0; PIECE];
        assert!(!pieces.extend(&more, &mut held));
        assert_eq!(gauge.get(), 3 * PIECE as i64);
        // What fitted of the refused bytes was kept after the body.
        let joined = pieces.into_bytes();
        assert_eq!(joined.len(), 3 * PIECE);
        assert_eq!(&joined[..body.len()], &body[..]);
        drop(held);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_body_of_declared_length_takes_pieces_no_larger_than_what_is_to_come() {
        let (budget, gauge) = budget(4 * PIECE as u64);
        let mut held = budget.hold();
        let small: Vec<u8> = (0..1500).map(|i| i as u8).collect();
        let mut pieces = Pieces::expecting(Some(1500));
        assert!(pieces.extend(&small[..700], &mut held));
        assert!(pieces.extend(&small[700..], &mut held));
        assert_eq!(gauge.get(), 1500, "counted at its declared length");
        assert_eq!(pieces.parts().len(), 1);
        assert_eq!(
            pieces.parts()[0].capacity(),
            1500,
            "no spare room to shrink"
        );
        assert_eq!(pieces.into_bytes(), small);
        drop(held);

        let mut held = budget.hold();
        let large: Vec<u8> = (0..2 * PIECE + 10).map(|i| i as u8).collect();
        let mut pieces = Pieces::expecting(Some(large.len() as u64));
        assert!(pieces.extend(&large, &mut held));
        let sizes: Vec<usize> = pieces.parts().iter().map(Vec::len).collect();
        assert_eq!(sizes, [PIECE, PIECE, 10]);
        assert_eq!(gauge.get(), large.len() as i64);
        // More than declared still arrives, in whole pieces.
        assert!(pieces.extend(&[1, 2, 3], &mut held));
        assert_eq!(gauge.get(), (large.len() + PIECE) as i64);
        let mut expected = large.clone();
        expected.extend_from_slice(&[1, 2, 3]);
        assert_eq!(pieces.into_bytes(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_that_have_arrived_are_never_evicted() {
        let (budget, gauge) = budget(100);
        let mut whole = budget.hold();
        assert!(whole.grow(90));
        whole.arrived();
        tokio::time::advance(STALL * 10).await;
        let mut small = budget.hold();
        assert!(!small.grow(20));
        assert!(small.grow(10));
        assert_eq!(gauge.get(), 100);
    }
}
