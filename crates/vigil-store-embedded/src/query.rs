//! Query planning and execution over a tenant's segments.
//!
//! For each segment, newest first, the filter is turned into a candidate doc set from the term
//! index ([`crate::index::lookup::candidates`]) (exact for every operator, except string values longer than the indexed prefix, which
//! are confirmed against the event). Candidates outside the time range or before the cursor are
//! dropped using the per-doc time column, and the best `limit + 1` by `(time, seq)` are kept in a
//! bounded heap, so whole segments whose time bounds cannot beat the current worst are skipped.
//! Only the winners are read from the log.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use vigil_event::Timestamp;
use vigil_query::{Cursor, Expr, Order, Query};
use vigil_store::{MAX_PAGE_READ_BYTES, Page, StoredEvent};

use crate::error::Result;
use crate::index::lookup::{SegmentView, TimeBlock, candidates};
use crate::log::record::OwnedRecord;
use crate::state::SegRef;

/// Key that is larger for "better" events in the requested order.
fn order_key(order: Order, time: i64, seq: u64) -> (i64, u64) {
    match order {
        Order::Desc => (time, seq),
        Order::Asc => (!time, !seq),
    }
}

/// Which events of a segment a query may return, besides its filter.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    tenant: &'a str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    cursor: Option<&'a Cursor>,
    now: Timestamp,
    order: Order,
    /// The worst order key a top-k query still keeps, once it holds k: blocks that cannot beat
    /// it are skipped whole. `None` for counts, or until k are found.
    floor: Option<&'a Cell<Option<(i64, u64)>>>,
}

/// The docs in a segment passing the filter and the scope, each with its time and seq. Calls
/// `f` for each until it returns false; confirms inexact candidates against the event.
fn for_each_match(
    seg: &dyn SegmentView,
    filter: &Expr,
    scope: Scope<'_>,
    mut f: impl FnMut(u32, i64, u64) -> bool,
) -> Result<()> {
    let Some(ordinal) = seg.tenant_ordinal_of(scope.tenant) else {
        return Ok(());
    };
    let Some((lo, hi)) = seg.time_range() else {
        return Ok(());
    };
    if scope.from.is_some_and(|f| hi < f.as_nanos()) || scope.to.is_some_and(|t| lo >= t.as_nanos())
    {
        return Ok(());
    }
    let c = candidates(seg, filter, scope.now);
    let mut visit = |doc: u32| -> Result<bool> {
        let Some(d) = seg.doc(doc) else {
            return Ok(true);
        };
        if d.tenant != ordinal
            || scope.from.is_some_and(|f| d.time < f.as_nanos())
            || scope.to.is_some_and(|t| d.time >= t.as_nanos())
            || scope
                .cursor
                .is_some_and(|c| !c.admits(Timestamp::from_nanos(d.time), d.seq))
        {
            return Ok(true);
        }
        if !c.exact && !confirm(seg, doc, filter, scope.now)? {
            return Ok(true);
        }
        Ok(f(doc, d.time, d.seq))
    };
    // Block pruning pays when candidates are dense; a sparse set is cheaper to walk directly.
    let dense = |blocks: &[TimeBlock]| c.docs.len() > 4 * blocks.len() as u64;
    let (Some(blocks), Some(floor)) = (seg.time_blocks().filter(|b| dense(b)), scope.floor) else {
        for doc in &c.docs {
            if !visit(doc)? {
                break;
            }
        }
        return Ok(());
    };
    // Top-k: walk blocks in the query's order (newest first for desc) and skip every block
    // whose time bounds cannot beat the worst event kept so far.
    let desc = scope.order == Order::Desc;
    let mut ordered: Box<dyn Iterator<Item = &TimeBlock>> = if desc {
        Box::new(blocks.iter().rev())
    } else {
        Box::new(blocks.iter())
    };
    ordered.try_for_each(|b| -> Result<()> {
        if let Some(worst) = floor.get() {
            let best = if desc {
                order_key(scope.order, b.max, u64::MAX)
            } else {
                order_key(scope.order, b.min, 0)
            };
            if best < worst {
                return Ok(());
            }
        }
        let range = c.docs.range(b.start..b.end);
        if desc {
            for doc in range.rev() {
                visit(doc)?;
            }
        } else {
            for doc in range {
                visit(doc)?;
            }
        }
        Ok(())
    })
}

/// Whether a candidate the index could not decide matches: a stored event that is not a JSON
/// object matches nothing.
fn confirm(seg: &dyn SegmentView, doc: u32, filter: &Expr, now: Timestamp) -> Result<bool> {
    let rec = seg.read(doc)?;
    Ok(vigil_store::confirm(filter, &rec.canonical, now).unwrap_or(false))
}

pub(crate) fn to_stored(rec: OwnedRecord) -> StoredEvent {
    StoredEvent {
        seq: rec.seq,
        time: Timestamp::from_nanos(rec.time),
        canonical: rec.canonical,
        hash: rec.chain,
    }
}

/// An event's order key, segment index and doc id.
type Ranked = ((i64, u64), usize, u32);

/// Runs `query` for `tenant` over `segments` (oldest first).
pub(crate) fn execute(
    segments: &[SegRef],
    tenant: &str,
    query: &Query,
    now: Timestamp,
) -> Result<Page> {
    let want = query.limit.saturating_add(1);
    // Min-heap of the best `want` events so far: the root is the worst kept.
    let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(want);
    let floor = Cell::new(None);
    let scope = Scope {
        tenant,
        from: query.from,
        to: query.to,
        cursor: query.cursor.as_ref(),
        now,
        order: query.order,
        floor: Some(&floor),
    };
    let order = query.order;
    let indices: Vec<usize> = match order {
        Order::Desc => (0..segments.len()).rev().collect(),
        Order::Asc => (0..segments.len()).collect(),
    };
    for si in indices {
        let Some(seg) = segments.get(si) else {
            continue;
        };
        // Each segment is visited under its own short lock, so a long query never holds up the
        // writer for longer than one segment's scan.
        if heap.len() >= want
            && let (Some(Reverse((worst, _, _))), Some((lo, hi))) =
                (heap.peek(), seg.with(|v| v.time_range()))
        {
            // Best possible key in this segment vs the worst kept.
            let best = match order {
                Order::Desc => order_key(order, hi, u64::MAX),
                Order::Asc => order_key(order, lo, 0),
            };
            if best < *worst {
                continue;
            }
        }
        seg.with(|v| {
            for_each_match(v, &query.filter, scope, |doc, time, seq| {
                let key = order_key(order, time, seq);
                if heap.len() < want {
                    heap.push(Reverse((key, si, doc)));
                } else if heap
                    .peek()
                    .is_some_and(|Reverse((worst, _, _))| key > *worst)
                {
                    heap.pop();
                    heap.push(Reverse((key, si, doc)));
                }
                if heap.len() >= want {
                    floor.set(heap.peek().map(|Reverse((worst, _, _))| *worst));
                }
                true
            })
        })?;
    }
    let mut best: Vec<Ranked> = heap.into_iter().map(|Reverse(x)| x).collect();
    best.sort_unstable_by_key(|r| Reverse(r.0));
    let more = best.len() > query.limit;
    best.truncate(query.limit);
    // Read the winners in order, but stop once a page holds MAX_PAGE_READ_BYTES: a page of
    // large events then ends early and its cursor resumes after the last one read.
    let mut events = Vec::with_capacity(best.len());
    let mut bytes = 0usize;
    let mut cut = false;
    for (_, si, doc) in &best {
        if bytes >= MAX_PAGE_READ_BYTES {
            cut = true;
            break;
        }
        if let Some(seg) = segments.get(*si) {
            let e = to_stored(seg.with(|v| v.read(*doc))?);
            bytes += e.canonical.len();
            events.push(e);
        }
    }
    Ok(Page::new(events, order, more || cut))
}

/// Counts the matches of `filter` for `tenant` with `from <= time < to`.
pub(crate) fn count(
    segments: &[SegRef],
    tenant: &str,
    filter: &Expr,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    now: Timestamp,
) -> Result<u64> {
    let mut n = 0u64;
    let scope = Scope {
        tenant,
        from,
        to,
        cursor: None,
        now,
        order: Order::Desc,
        floor: None,
    };
    for seg in segments {
        seg.with(|v| {
            for_each_match(v, filter, scope, |_, _, _| {
                n += 1;
                true
            })
        })?;
    }
    Ok(n)
}
