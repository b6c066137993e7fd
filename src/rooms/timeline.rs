//! Paging through a room's timeline, or a slice of it such as an event's
//! relations, as one user sees it: the caller's filter and history visibility
//! decide what is kept; positions are stream positions (an event with stream
//! ordering N lies between positions N-1 and N).
//!
//! Knows nothing of HTTP: handlers turn positions into tokens.

use crate::error::{Error, Result};
use crate::storage::StoredEvent;

/// A page reads at most this many stored events before it answers with what it
/// kept, so a user who may see little of a long room (or whose filter matches
/// little) cannot make one request read the whole room.
pub const MAX_SCANNED_EVENTS: usize = 2000;

/// Events are read from storage in batches of at least this many.
const MIN_BATCH: usize = 20;

/// Which way a page goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Newest first (`dir=b`).
    Backwards,
    /// Oldest first (`dir=f`).
    Forwards,
}

impl Direction {
    /// Parses a `dir` parameter (`b` or `f`), with a default when absent.
    pub fn parse(text: Option<&str>, default: Option<Direction>) -> Result<Direction> {
        match (text, default) {
            (Some("b"), _) => Ok(Direction::Backwards),
            (Some("f"), _) => Ok(Direction::Forwards),
            (Some(other), _) => Err(Error::InvalidParam(format!("dir must be b or f, not {other:?}"))),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(Error::MissingParam("dir is required".into())),
        }
    }
}

/// Stream positions `(lower, upper]`: the part of history a page may cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub lower: i64,
    pub upper: i64,
}

/// What a page found.
#[derive(Debug)]
pub struct Page {
    /// Kept events, in the direction's order.
    pub events: Vec<StoredEvent>,
    /// Where the next page starts, when more events may follow.
    pub next: Option<i64>,
}

/// Collects up to `limit` kept events from `window`, going `direction`.
/// `fetch(after, up_to, n)` reads at most `n` events in `(after, up_to]` in the
/// direction's order; `keep` says which of them the caller wants.
pub fn paginate(
    direction: Direction,
    window: Window,
    limit: usize,
    mut fetch: impl FnMut(i64, i64, usize) -> Result<Vec<StoredEvent>>,
    mut keep: impl FnMut(&StoredEvent) -> bool,
) -> Result<Page> {
    let Window { mut lower, mut upper } = window;
    let cursor = |lower: i64, upper: i64| match direction {
        Direction::Backwards => upper,
        Direction::Forwards => lower,
    };
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(Page { events, next: (lower < upper).then(|| cursor(lower, upper)) });
    }
    let batch_size = (limit + 1).max(MIN_BATCH);
    let mut scanned = 0;
    // Once the page is full: where the next page starts. Reading goes on only
    // to learn whether any kept event follows, so a last page says so.
    let mut full_at = None;
    loop {
        if lower >= upper {
            return Ok(Page { events, next: None });
        }
        let batch = fetch(lower, upper, batch_size)?;
        let exhausted = batch.len() < batch_size;
        for event in batch {
            match direction {
                Direction::Backwards => upper = event.stream_ordering - 1,
                Direction::Forwards => lower = event.stream_ordering,
            }
            scanned += 1;
            if keep(&event) {
                if full_at.is_some() {
                    return Ok(Page { events, next: full_at });
                }
                events.push(event);
                if events.len() == limit {
                    full_at = Some(cursor(lower, upper));
                }
            }
            if scanned >= MAX_SCANNED_EVENTS {
                return Ok(Page { events, next: full_at.or(Some(cursor(lower, upper))) });
            }
        }
        if exhausted {
            return Ok(Page { events, next: None });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream_ordering: i64) -> StoredEvent {
        StoredEvent {
            stream_ordering,
            event_id: format!("${stream_ordering}"),
            room_id: "!r:x".into(),
            kind: "m.room.message".into(),
            state_key: None,
            sender: "@a:x".into(),
            origin_server_ts: 0,
            json: Default::default(),
            state_group: None,
            replaces_state: None,
            redacted_by: None,
            device_id: None,
            txn_id: None,
            outlier: false,
            soft_failed: false,
        }
    }

    /// Reads a room of events 1..=n the way storage reads it.
    fn read_room(n: i64, direction: Direction, after: i64, up_to: i64, limit: usize) -> Vec<StoredEvent> {
        let mut found: Vec<StoredEvent> = (1..=n).filter(|s| after < *s && *s <= up_to).map(event).collect();
        if direction == Direction::Backwards {
            found.reverse();
        }
        found.truncate(limit);
        found
    }

    fn walk(direction: Direction, n: i64, limit: usize, keep: fn(&StoredEvent) -> bool) -> Vec<Vec<i64>> {
        let mut pages = Vec::new();
        let mut window = Window { lower: 0, upper: n };
        loop {
            let fetch = |after, up_to, limit| Ok(read_room(n, direction, after, up_to, limit));
            let page = paginate(direction, window, limit, fetch, keep).unwrap();
            pages.push(page.events.iter().map(|e| e.stream_ordering).collect());
            match (page.next, direction) {
                (None, _) => return pages,
                (Some(next), Direction::Backwards) => window.upper = next,
                (Some(next), Direction::Forwards) => window.lower = next,
            }
        }
    }

    #[test]
    fn pages_cover_every_event_once_in_both_directions() {
        assert_eq!(walk(Direction::Backwards, 7, 3, |_| true), vec![vec![7, 6, 5], vec![4, 3, 2], vec![1]]);
        assert_eq!(walk(Direction::Forwards, 6, 3, |_| true), vec![vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(walk(Direction::Forwards, 0, 3, |_| true), vec![Vec::<i64>::new()]);
    }

    #[test]
    fn filtered_pages_skip_without_losing_events() {
        let even = |event: &StoredEvent| event.stream_ordering % 2 == 0;
        assert_eq!(walk(Direction::Backwards, 9, 2, even), vec![vec![8, 6], vec![4, 2]]);
        assert_eq!(walk(Direction::Forwards, 9, 2, even), vec![vec![2, 4], vec![6, 8]]);
    }

    #[test]
    fn long_invisible_stretches_end_a_page_early() {
        let none = |_: &StoredEvent| false;
        let pages = walk(Direction::Backwards, 5000, 10, none);
        assert!(pages.len() >= 3 && pages.iter().all(Vec::is_empty), "{}", pages.len());
    }

    #[test]
    fn directions_parse_with_defaults() {
        assert_eq!(Direction::parse(Some("f"), None).unwrap(), Direction::Forwards);
        assert_eq!(Direction::parse(None, Some(Direction::Backwards)).unwrap(), Direction::Backwards);
        assert!(Direction::parse(None, None).is_err());
        assert!(Direction::parse(Some("x"), None).is_err());
    }
}
