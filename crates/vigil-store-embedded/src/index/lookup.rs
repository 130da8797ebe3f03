//! Index lookup: what a query can ask of any segment's index, sealed ([`super::sealed`]) or
//! live ([`super::memtable`]): the docs of a term, of a range of terms, each doc's sort columns,
//! and time bounds per block. The query plan (`crate::query`) turns a filter into candidate
//! doc sets through [`SegmentView`] alone, with [`candidates`] here; [`find_id`] finds an
//! event by id for the writer's duplicate checks and `GET /v1/events/{id}`.

use roaring::RoaringBitmap;
use vigil_event::{Scalar, Term, TermKind, Timestamp};
use vigil_query::{CmpOp, Expr, Literal, parse_time_bound};
use vigil_store::is_time_path;

use crate::error::Result;
use crate::log::record::OwnedRecord;
use crate::state::SegRef;

/// The bytes of a term up to its path separator.
pub(crate) fn path_of(term: &[u8]) -> &[u8] {
    let end = term.iter().position(|&b| b == 0).unwrap_or(term.len());
    term.get(..end).unwrap_or_default()
}

/// Sort and filter fields of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocRef {
    pub time: i64,
    pub seq: u64,
    pub tenant: u32,
}

/// What a query needs from any segment, sealed or not.
pub(crate) trait SegmentView: Send + Sync {
    fn doc_count(&self) -> u32;
    /// Smallest and largest event time in the segment.
    fn time_range(&self) -> Option<(i64, i64)>;
    /// Adds the docs containing `term` to `out`.
    fn lookup(&self, term: &[u8], out: &mut RoaringBitmap);
    /// Adds the docs of every term `t` with `lo <= t < hi` and `keep(t)` to `out`. `lo` and `hi`
    /// share one path.
    fn scan(
        &self,
        lo: &[u8],
        hi: &[u8],
        keep: &mut dyn FnMut(&[u8]) -> bool,
        out: &mut RoaringBitmap,
    );
    fn doc(&self, doc: u32) -> Option<DocRef>;
    /// Doc ranges with their time bounds, when the segment keeps them.
    fn time_blocks(&self) -> Option<&[TimeBlock]> {
        None
    }
    fn tenant_ordinal_of(&self, tenant: &str) -> Option<u32>;
    fn read(&self, doc: u32) -> Result<OwnedRecord>;
}

/// Doc range and time bounds of one block, for time filters that take or skip whole blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeBlock {
    pub start: u32,
    pub end: u32,
    pub min: i64,
    pub max: i64,
}

// --- From a filter to candidate docs -------------------------------------------------------

/// A doc set and whether every member surely matches (false: confirm against the event).
#[derive(Debug)]
pub(crate) struct Candidates {
    pub(crate) docs: RoaringBitmap,
    pub(crate) exact: bool,
}

fn universe(seg: &dyn SegmentView) -> RoaringBitmap {
    let mut b = RoaringBitmap::new();
    b.insert_range(0..seg.doc_count());
    b
}

fn time_literal(lit: &Literal, now: Timestamp) -> Option<Timestamp> {
    parse_time_bound(&lit.raw, now)
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

fn cmp_holds<T: PartialOrd>(op: CmpOp, value: T, bound: T) -> bool {
    match op {
        CmpOp::Eq => value == bound,
        CmpOp::Gt => value > bound,
        CmpOp::Ge => value >= bound,
        CmpOp::Lt => value < bound,
        CmpOp::Le => value <= bound,
    }
}

/// Docs whose `time` column satisfies `op bound`. Blocks whose time bounds settle the question
/// are taken or skipped whole.
fn time_column(seg: &dyn SegmentView, op: CmpOp, bound: i64) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    let scan = |start: u32, end: u32, out: &mut RoaringBitmap| {
        for doc in start..end {
            if seg.doc(doc).is_some_and(|d| cmp_holds(op, d.time, bound)) {
                out.insert(doc);
            }
        }
    };
    let Some(blocks) = seg.time_blocks() else {
        scan(0, seg.doc_count(), &mut out);
        return out;
    };
    for b in blocks {
        if op != CmpOp::Eq && cmp_holds(op, b.min, bound) && cmp_holds(op, b.max, bound) {
            out.insert_range(b.start..b.end);
        } else if range_may_hold(op, b.min, b.max, bound) {
            scan(b.start, b.end, &mut out);
        }
    }
    out
}

/// Whether some value in `[lo, hi]` can satisfy `op bound`.
fn range_may_hold(op: CmpOp, lo: i64, hi: i64, bound: i64) -> bool {
    match op {
        CmpOp::Eq => lo <= bound && bound <= hi,
        CmpOp::Gt => hi > bound,
        CmpOp::Ge => hi >= bound,
        CmpOp::Lt => lo < bound,
        CmpOp::Le => lo <= bound,
    }
}

pub(crate) fn candidates(seg: &dyn SegmentView, expr: &Expr, now: Timestamp) -> Candidates {
    match expr {
        Expr::All => Candidates {
            docs: universe(seg),
            exact: true,
        },
        Expr::And(parts) => {
            let mut acc: Option<Candidates> = None;
            for p in parts {
                let c = candidates(seg, p, now);
                acc = Some(match acc {
                    None => c,
                    Some(a) => Candidates {
                        docs: a.docs & c.docs,
                        exact: a.exact && c.exact,
                    },
                });
                if acc.as_ref().is_some_and(|a| a.docs.is_empty()) {
                    break;
                }
            }
            acc.unwrap_or(Candidates {
                docs: universe(seg),
                exact: true,
            })
        }
        Expr::Or(parts) => {
            let mut docs = RoaringBitmap::new();
            let mut exact = true;
            for p in parts {
                let c = candidates(seg, p, now);
                docs |= c.docs;
                exact &= c.exact;
            }
            Candidates { docs, exact }
        }
        Expr::Not(inner) => {
            let c = candidates(seg, inner, now);
            if c.exact {
                Candidates {
                    docs: universe(seg) - c.docs,
                    exact: true,
                }
            } else {
                Candidates {
                    docs: universe(seg),
                    exact: false,
                }
            }
        }
        Expr::Prefix { path, prefix } => {
            let lo = Term::string_prefix(path, prefix);
            let hi = prefix_end(&lo);
            let mut docs = RoaringBitmap::new();
            seg.scan(&lo, &hi, &mut |_| true, &mut docs);
            Candidates {
                docs,
                exact: prefix.len() < Term::MAX_STRING_BYTES,
            }
        }
        Expr::Exists { path } => {
            let mut lo = path.as_bytes().to_vec();
            lo.push(0);
            let mut hi = path.as_bytes().to_vec();
            hi.push(1);
            let mut docs = RoaringBitmap::new();
            seg.scan(&lo, &hi, &mut |_| true, &mut docs);
            Candidates { docs, exact: true }
        }
        Expr::Compare { path, op, value } => compare(seg, path, *op, value, now),
    }
}

fn compare(
    seg: &dyn SegmentView,
    path: &str,
    op: CmpOp,
    lit: &Literal,
    now: Timestamp,
) -> Candidates {
    let mut docs = RoaringBitmap::new();
    if path == "time"
        && let Some(t) = time_literal(lit, now)
    {
        return Candidates {
            docs: time_column(seg, op, t.as_nanos()),
            exact: true,
        };
    }
    if op == CmpOp::Eq {
        let mut exact = true;
        let mut buf = Vec::new();
        let normalized_time = is_time_path(path)
            .then(|| time_literal(lit, now))
            .flatten()
            .map(|t| t.to_rfc3339());
        if let Some(t) = &normalized_time {
            buf.clear();
            Term::encode_into(path, Scalar::String(t), &mut buf);
            seg.lookup(&buf, &mut docs);
        }
        for s in lit.exact_candidates() {
            if let Scalar::String(v) = s
                && v.len() >= Term::MAX_STRING_BYTES
            {
                exact = false;
            }
            buf.clear();
            Term::encode_into(path, s, &mut buf);
            seg.lookup(&buf, &mut docs);
        }
        return Candidates { docs, exact };
    }
    // Ranges: numbers by their order-preserving encoding; times by parsing each string of the
    // path; anything else as strings in byte order.
    // A number on a time path is an epoch time, not a numeric comparison.
    let number = if is_time_path(path) {
        None
    } else {
        lit.as_number()
    };
    if let Some(n) = number {
        let (kind_lo, kind_hi) = Term::kind_range(path, TermKind::Number);
        let mut at = Vec::new();
        Term::encode_into(path, Scalar::Number(n), &mut at);
        let (lo, hi) = match op {
            CmpOp::Gt | CmpOp::Ge => (at, kind_hi),
            _ => {
                let mut end = at;
                end.push(0);
                (kind_lo, end)
            }
        };
        seg.scan(&lo, &hi, &mut |t| matches!(vigil_event::Term::decode(t), Some((_, Scalar::Number(v))) if cmp_holds(op, v, n)), &mut docs);
        return Candidates { docs, exact: true };
    }
    let (lo, hi) = Term::kind_range(path, TermKind::String);
    if let Some(t) = time_literal(lit, now) {
        let bound = t.as_nanos();
        seg.scan(
            &lo,
            &hi,
            &mut |term| match Term::decode(term) {
                Some((_, Scalar::String(s))) => {
                    Timestamp::parse_rfc3339(s).is_some_and(|v| cmp_holds(op, v.as_nanos(), bound))
                }
                _ => false,
            },
            &mut docs,
        );
        return Candidates { docs, exact: true };
    }
    let raw = lit.raw.as_str();
    let mut exact = true;
    seg.scan(
        &lo,
        &hi,
        &mut |term| match Term::decode(term) {
            Some((_, Scalar::String(s))) => {
                if s.len() >= Term::MAX_STRING_BYTES {
                    exact = false;
                    true
                } else {
                    cmp_holds(op, s, raw)
                }
            }
            _ => false,
        },
        &mut docs,
    );
    Candidates { docs, exact }
}

// --- By id ---------------------------------------------------------------------------------

/// The newest record of `tenant` with this id, if any.
pub(crate) fn find_id(segments: &[SegRef], tenant: &str, id: &str) -> Result<Option<OwnedRecord>> {
    let mut term = Vec::new();
    Term::encode_into("id", Scalar::String(id), &mut term);
    for seg in segments.iter().rev() {
        if let Some(found) = seg.with(|v| find_id_in(v, tenant, id, &term))? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn find_id_in(
    seg: &dyn SegmentView,
    tenant: &str,
    id: &str,
    term: &[u8],
) -> Result<Option<OwnedRecord>> {
    let Some(ordinal) = seg.tenant_ordinal_of(tenant) else {
        return Ok(None);
    };
    let mut docs = RoaringBitmap::new();
    seg.lookup(term, &mut docs);
    for doc in &docs {
        if seg.doc(doc).is_some_and(|d| d.tenant == ordinal) {
            let rec = seg.read(doc)?;
            if rec.id == id {
                return Ok(Some(rec));
            }
        }
    }
    Ok(None)
}
