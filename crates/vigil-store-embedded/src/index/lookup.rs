//! Index lookup: what a query can ask of any segment's index, sealed ([`super::sealed`]) or
//! live ([`super::memtable`]): the docs of a term, of a range of terms, each doc's sort columns,
//! and time bounds per block. The query plan (`crate::query`) turns a filter into candidate
//! doc sets through [`SegmentView`] alone.

use roaring::RoaringBitmap;

use crate::error::Result;
use crate::log::record::OwnedRecord;

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
