//! The group-commit decision every backend's writer makes, as one pure function: which events
//! of a commit group are new, which are duplicates, which requests are refused, and the seq,
//! Merkle leaf and chain hash of each new event.
//!
//! A writer takes the append requests queued while its previous commit ran as one *group*,
//! asks [`decide`] what to do with it, writes the [`Decision`]'s new events (embedded: log
//! records and one fsync; PostgreSQL: `COPY` and one transaction), moves its tenants' heads and
//! answers each request with its result. The function does no I/O: what it must know about the
//! store — what is stored under an id, where each tenant's log ends, whether an event fits — it
//! asks through [`StoreState`].
//!
//! # The rule
//! Requests are decided in group order, each on its own:
//! 1. An event's id is looked up among the ids new in this group, then the ids earlier in its
//!    request, then the stored ones. Same content (digest): a duplicate. Other content: a
//!    conflict. Every conflict of the request is listed, by index.
//! 2. A request with a conflict, an event the backend cannot store, or a failed lookup is
//!    refused whole: it stores nothing and moves no head, and the rest of the group goes on.
//! 3. Otherwise each new event takes its tenant's next seq; its leaf is the hash of its
//!    canonical bytes at that seq and its chain hash `chain_hash(previous chain, leaf)`.
//!    A duplicate answers with the original's seq (a repeat inside the group: the first copy's).

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;

use vigil_event::{EventId, Hash, Prepared, TenantId, chain_hash, leaf_hash};

use crate::{Appended, Conflict, StoreError};

/// Where a tenant's log ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// Seq of the last event (0: the tenant has none).
    pub seq: u64,
    /// Chain hash of the last event (32 zero bytes, where every chain starts, when none).
    pub chain: Hash,
}

/// What is already stored under an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    pub seq: u64,
    /// The stored event's content digest (`Prepared::content_digest`).
    pub digest: Hash,
    /// Stored by an earlier attempt of this very group whose outcome was unknown (a connection
    /// lost during COMMIT, then a retry): the event is new to its caller, not a duplicate, and
    /// later copies of its id in the group are duplicates of it.
    pub retried: bool,
}

/// What the decision reads from the store. Answers must describe the store as it was before
/// the group: the decision itself keeps track of what the group adds.
pub trait StoreState {
    /// Refuses an event the backend cannot store (larger than its record format allows, say).
    /// Checked before the event's id is looked up.
    fn admit(&self, _event: &Prepared) -> Result<(), StoreError> {
        Ok(())
    }

    /// What is stored under `(tenant, id)`, if anything.
    fn stored(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Prior>, StoreError>;

    /// Where `tenant`'s log ends ([`Head::default`] for a tenant without events).
    fn head(&self, tenant: &TenantId) -> Head;
}

/// An event the group writes.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub event: &'a Prepared,
    /// Position of the event's request in the group, and of the event in its request.
    pub request: usize,
    pub index: usize,
    pub seq: u64,
    /// The event's canonical bytes at `seq`: what is stored, hashed and returned.
    pub canonical: Vec<u8>,
    /// `leaf_hash(canonical)`: the event's Merkle leaf.
    pub leaf: Hash,
    /// `chain_hash(previous event's chain, leaf)`.
    pub chain: Hash,
}

/// What a writer does with a commit group.
#[derive(Debug)]
pub struct Decision<'a> {
    /// Per request, in group order: each event's outcome in request order, or why the request
    /// stores nothing.
    pub results: Vec<Result<Vec<Appended>, StoreError>>,
    /// The events to write, in order (per tenant, by increasing seq).
    pub new: Vec<NewEvent<'a>>,
    /// The heads of the tenants that got new events, after them, in the order the group
    /// first wrote to each.
    pub heads: Vec<(&'a TenantId, Head)>,
}

/// `(tenant, id)` → something, hashed fast (the keys are authenticated clients' ids; foldhash is
/// randomly seeded, so they cannot aim for collisions).
type IdMap<'a, V> = HashMap<(&'a str, &'a str), V, foldhash::fast::RandomState>;

/// Decides a commit group: `requests` in the order they were queued. See the module doc.
pub fn decide<'a>(
    requests: impl IntoIterator<Item = &'a [Prepared]>,
    state: &impl StoreState,
) -> Decision<'a> {
    let mut decision = Decision {
        results: Vec::new(),
        new: Vec::new(),
        heads: Vec::new(),
    };
    // Ids the group has written so far: their seq and digest.
    let mut fresh: IdMap<'a, (u64, Hash)> = IdMap::default();
    // The heads of the tenants written to, and the order they were first written to in.
    let mut heads: HashMap<&'a str, Head, foldhash::fast::RandomState> = HashMap::default();
    let mut written: Vec<&'a TenantId> = Vec::new();
    for (request, events) in requests.into_iter().enumerate() {
        let result = check(events, &fresh, state).map(|stored| {
            let mut appended = Vec::with_capacity(events.len());
            for (index, (event, stored)) in events.iter().zip(stored).enumerate() {
                let key = (event.tenant.as_str(), event.id.as_str());
                if let Some(&(seq, _)) = fresh.get(&key) {
                    appended.push(Appended {
                        id: event.id.clone(),
                        seq,
                        duplicate: true,
                    });
                    continue;
                }
                if let Some(prior) = stored {
                    if prior.retried {
                        fresh.insert(key, (prior.seq, prior.digest));
                    }
                    appended.push(Appended {
                        id: event.id.clone(),
                        seq: prior.seq,
                        duplicate: !prior.retried,
                    });
                    continue;
                }
                let head = heads.entry(key.0).or_insert_with(|| {
                    written.push(&event.tenant);
                    state.head(&event.tenant)
                });
                let seq = head.seq + 1;
                let canonical = event.canonical_bytes(seq);
                let leaf = leaf_hash(&canonical);
                let chain = chain_hash(&head.chain, &leaf);
                *head = Head { seq, chain };
                fresh.insert(key, (seq, event.content_digest));
                decision.new.push(NewEvent {
                    event,
                    request,
                    index,
                    seq,
                    canonical,
                    leaf,
                    chain,
                });
                appended.push(Appended {
                    id: event.id.clone(),
                    seq,
                    duplicate: false,
                });
            }
            appended
        });
        decision.results.push(result);
    }
    decision.heads = written
        .into_iter()
        .filter_map(|t| Some((t, *heads.get(t.as_str())?)))
        .collect();
    decision
}

/// The first pass over a request, changing nothing: refuses it, or returns for each event what
/// the store holds under its id when that had to be looked up (`None` when the id is new, or
/// was settled by the group or the request itself).
fn check<'a>(
    events: &'a [Prepared],
    fresh: &IdMap<'a, (u64, Hash)>,
    state: &impl StoreState,
) -> Result<Vec<Option<Prior>>, StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    let mut conflicts = Vec::new();
    // Digests of the ids first seen new in this request.
    let mut local: IdMap<'a, Hash> = IdMap::default();
    for (index, event) in events.iter().enumerate() {
        state.admit(event)?;
        let key = (event.tenant.as_str(), event.id.as_str());
        let mut found = None;
        let digest = if let Some(&(_, digest)) = fresh.get(&key) {
            Some(digest)
        } else if let Some(&digest) = local.get(&key) {
            Some(digest)
        } else {
            found = state.stored(&event.tenant, &event.id)?;
            found.map(|p| p.digest)
        };
        match digest {
            Some(digest) if digest != event.content_digest => conflicts.push(Conflict {
                index,
                id: event.id.clone(),
            }),
            Some(_) => {}
            None => {
                local.insert(key, event.content_digest);
            }
        }
        stored.push(found);
    }
    if conflicts.is_empty() {
        Ok(stored)
    } else {
        Err(StoreError::Conflict(conflicts))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;
    use vigil_event::{Limits, Timestamp, normalize};

    use super::*;

    /// An event of `tenant` with id `ev-<id>` whose content is `variant`.
    fn event(tenant: &str, id: u8, variant: u8) -> Prepared {
        normalize(
            json!({
                "id": format!("ev-{id}"),
                "type": "login.failed",
                "time": "2024-05-01T12:00:00Z",
                "details": {"variant": variant},
            }),
            &Limits::default(),
        )
        .expect("valid event")
        .prepare(
            &TenantId::parse(tenant).expect("tenant"),
            Timestamp::from_nanos(1_700_000_000_000_000_000),
            "test",
        )
    }

    /// A store in memory: what a backend would answer, plus knobs for the refusals.
    #[derive(Default)]
    struct Memory {
        ids: BTreeMap<(String, String), Prior>,
        heads: BTreeMap<String, Head>,
        /// Events with this id are refused by `admit`.
        too_large: Option<String>,
        /// Looking up this id fails.
        broken: Option<String>,
        lookups: Cell<usize>,
    }

    impl StoreState for Memory {
        fn admit(&self, event: &Prepared) -> Result<(), StoreError> {
            match &self.too_large {
                Some(id) if id == event.id.as_str() => Err(StoreError::internal("event too large")),
                _ => Ok(()),
            }
        }

        fn stored(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Prior>, StoreError> {
            self.lookups.set(self.lookups.get() + 1);
            if self.broken.as_deref() == Some(id.as_str()) {
                return Err(StoreError::internal("lookup failed"));
            }
            Ok(self
                .ids
                .get(&(tenant.as_str().to_owned(), id.as_str().to_owned()))
                .copied())
        }

        fn head(&self, tenant: &TenantId) -> Head {
            self.heads.get(tenant.as_str()).copied().unwrap_or_default()
        }
    }

    impl Memory {
        /// Writes a decision, as a backend would after its I/O succeeded.
        fn apply(&mut self, d: &Decision<'_>) {
            for n in &d.new {
                self.ids.insert(
                    (
                        n.event.tenant.as_str().to_owned(),
                        n.event.id.as_str().to_owned(),
                    ),
                    Prior {
                        seq: n.seq,
                        digest: n.event.content_digest,
                        retried: false,
                    },
                );
            }
            for (tenant, head) in &d.heads {
                self.heads.insert(tenant.as_str().to_owned(), *head);
            }
        }
    }

    fn decide_all<'a>(group: &'a [Vec<Prepared>], state: &Memory) -> Decision<'a> {
        decide(group.iter().map(Vec::as_slice), state)
    }

    fn appended(d: &Decision<'_>, request: usize) -> Vec<(u64, bool)> {
        match d.results.get(request) {
            Some(Ok(a)) => a.iter().map(|a| (a.seq, a.duplicate)).collect(),
            other => panic!("request {request}: {other:?}"),
        }
    }

    fn conflicts(d: &Decision<'_>, request: usize) -> Vec<usize> {
        match d.results.get(request) {
            Some(Err(StoreError::Conflict(c))) => c.iter().map(|c| c.index).collect(),
            other => panic!("request {request}: {other:?}"),
        }
    }

    #[test]
    fn new_events_take_consecutive_seqs_and_chain() {
        let group = vec![vec![event("a", 1, 0), event("a", 2, 0)]];
        let d = decide_all(&group, &Memory::default());
        assert_eq!(appended(&d, 0), [(1, false), (2, false)]);
        let [first, second] = d.new.as_slice() else {
            panic!("two new events")
        };
        assert_eq!(first.canonical, group[0][0].canonical_bytes(1));
        assert_eq!(first.leaf, leaf_hash(&first.canonical));
        assert_eq!(first.chain, chain_hash(&[0; 32], &first.leaf));
        assert_eq!(second.chain, chain_hash(&first.chain, &second.leaf));
        assert_eq!(
            d.heads,
            [(
                &group[0][0].tenant,
                Head {
                    seq: 2,
                    chain: second.chain
                }
            )]
        );
    }

    #[test]
    fn seqs_continue_from_the_stored_head() {
        let mut store = Memory::default();
        store.heads.insert(
            "a".into(),
            Head {
                seq: 41,
                chain: [9; 32],
            },
        );
        let group = vec![vec![event("a", 1, 0)]];
        let d = decide_all(&group, &store);
        assert_eq!(appended(&d, 0), [(42, false)]);
        assert_eq!(d.new[0].chain, chain_hash(&[9; 32], &d.new[0].leaf));
    }

    #[test]
    fn duplicates_answer_with_the_original_seq() {
        let mut store = Memory::default();
        let stored = vec![vec![event("a", 1, 0)]];
        let d = decide_all(&stored, &store);
        store.apply(&d);
        // A stored id, an id new earlier in the group, a repeat inside a request.
        let group = vec![
            vec![event("a", 1, 0), event("a", 2, 0)],
            vec![event("a", 2, 0), event("a", 3, 0), event("a", 3, 0)],
        ];
        let d = decide_all(&group, &store);
        assert_eq!(appended(&d, 0), [(1, true), (2, false)]);
        assert_eq!(appended(&d, 1), [(2, true), (3, false), (3, true)]);
        assert_eq!(d.new.len(), 2);
    }

    #[test]
    fn same_id_other_content_is_a_conflict_listing_every_index() {
        let mut store = Memory::default();
        let stored = vec![vec![event("a", 1, 0)]];
        let d = decide_all(&stored, &store);
        store.apply(&d);
        let group = vec![
            vec![event("a", 2, 0)],
            // Against the store, the group and the request itself.
            vec![
                event("a", 1, 1),
                event("a", 2, 1),
                event("a", 3, 0),
                event("a", 3, 1),
                event("a", 4, 0),
            ],
            vec![event("a", 5, 0)],
        ];
        let d = decide_all(&group, &store);
        assert_eq!(conflicts(&d, 1), [0, 1, 3]);
        assert_eq!(appended(&d, 0), [(2, false)]);
        // The refused request took no seq.
        assert_eq!(appended(&d, 2), [(3, false)]);
        assert_eq!(d.new.len(), 2);
    }

    #[test]
    fn a_refused_request_changes_no_head() {
        for store in [
            Memory {
                too_large: Some("ev-2".into()),
                ..Memory::default()
            },
            Memory {
                broken: Some("ev-2".into()),
                ..Memory::default()
            },
        ] {
            let group = vec![vec![event("a", 1, 0), event("b", 2, 0)]];
            let d = decide_all(&group, &store);
            assert!(matches!(d.results[0], Err(StoreError::Internal(_))));
            assert!(d.new.is_empty());
            assert!(d.heads.is_empty());
        }
    }

    /// A failure beats conflicts found earlier in the same request: the request fails with it.
    #[test]
    fn a_failure_is_reported_before_conflicts() {
        let mut store = Memory::default();
        let stored = vec![vec![event("a", 1, 0)]];
        let d = decide_all(&stored, &store);
        store.apply(&d);
        store.too_large = Some("ev-2".into());
        let group = vec![vec![event("a", 1, 1), event("a", 2, 0)]];
        let d = decide_all(&group, &store);
        assert!(matches!(d.results[0], Err(StoreError::Internal(_))));
    }

    /// Only ids the group and the request have not settled are looked up.
    #[test]
    fn settled_ids_are_not_looked_up() {
        let store = Memory::default();
        let group = vec![
            vec![event("a", 1, 0), event("a", 1, 0)],
            vec![event("a", 1, 0)],
        ];
        let d = decide_all(&group, &store);
        assert_eq!(store.lookups.get(), 1);
        assert_eq!(appended(&d, 1), [(1, true)]);
    }

    /// PostgreSQL retrying a group after a lost COMMIT: the id it wrote in the lost attempt is
    /// new to the caller, and its later copies are duplicates of it.
    #[test]
    fn an_id_written_by_an_earlier_attempt_is_new() {
        let mut store = Memory::default();
        let group = vec![vec![event("a", 1, 0)], vec![event("a", 1, 0)]];
        let d = decide_all(&group, &store);
        store.apply(&d);
        for prior in store.ids.values_mut() {
            prior.retried = true;
        }
        let d = decide_all(&group, &store);
        assert_eq!(appended(&d, 0), [(1, false)]);
        assert_eq!(appended(&d, 1), [(1, true)]);
        assert!(d.new.is_empty());
    }

    #[test]
    fn interleaved_tenants_each_get_their_own_log() {
        let group = vec![
            vec![event("a", 1, 0), event("b", 1, 0), event("a", 2, 0)],
            vec![event("b", 2, 0), event("c", 1, 0), event("a", 3, 0)],
        ];
        let d = decide_all(&group, &Memory::default());
        assert_eq!(appended(&d, 0), [(1, false), (1, false), (2, false)]);
        assert_eq!(appended(&d, 1), [(2, false), (1, false), (3, false)]);
        let heads: Vec<(&str, u64)> = d.heads.iter().map(|(t, h)| (t.as_str(), h.seq)).collect();
        assert_eq!(heads, [("a", 3), ("b", 2), ("c", 1)]);
    }

    /// The rule of the module doc written as plainly as possible, with the group's writes and
    /// the store's contents in one map: each request's expected answer, given the store before.
    fn model(
        ids: &mut BTreeMap<(String, String), (u64, Hash)>,
        heads: &mut BTreeMap<String, u64>,
        request: &[Prepared],
    ) -> Result<Vec<(u64, bool)>, Vec<usize>> {
        let key = |e: &Prepared| (e.tenant.as_str().to_owned(), e.id.as_str().to_owned());
        let mut first: BTreeMap<(String, String), Hash> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for (i, e) in request.iter().enumerate() {
            let known = ids
                .get(&key(e))
                .map(|(_, d)| *d)
                .or_else(|| first.get(&key(e)).copied());
            match known {
                Some(d) if d != e.content_digest => conflicts.push(i),
                Some(_) => {}
                None => {
                    first.insert(key(e), e.content_digest);
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        Ok(request
            .iter()
            .map(|e| match ids.get(&key(e)) {
                Some((seq, _)) => (*seq, true),
                None => {
                    let head = heads.entry(e.tenant.as_str().to_owned()).or_default();
                    *head += 1;
                    ids.insert(key(e), (*head, e.content_digest));
                    (*head, false)
                }
            })
            .collect())
    }

    /// Groups of requests of (tenant, id, content variant), over few tenants and ids so that
    /// duplicates and conflicts are common.
    fn arb_groups() -> impl Strategy<Value = Vec<Vec<Vec<(u8, u8, u8)>>>> {
        let request = prop::collection::vec((0u8..3, 0u8..6, 0u8..2), 1..6);
        let group = prop::collection::vec(request, 1..5);
        prop::collection::vec(group, 1..4)
    }

    proptest! {
        /// Group after group, against a store that keeps what each decision wrote: every
        /// answer is the model's, seqs are gap-free per tenant, every chain hash extends the
        /// previous one, and refused requests write nothing.
        #[test]
        fn decisions_follow_the_rule(groups in arb_groups()) {
            let mut store = Memory::default();
            let mut model_ids = BTreeMap::new();
            let mut model_heads = BTreeMap::new();
            // Per tenant: every event written so far, (seq, leaf, chain).
            let mut logs: BTreeMap<String, Vec<(u64, Hash, Hash)>> = BTreeMap::new();
            for spec in &groups {
                let group: Vec<Vec<Prepared>> = spec
                    .iter()
                    .map(|r| r.iter().map(|&(t, id, v)| event(&format!("t{t}"), id, v)).collect())
                    .collect();
                let heads_before = store.heads.clone();
                let d = decide_all(&group, &store);
                prop_assert_eq!(d.results.len(), group.len());
                for (r, request) in group.iter().enumerate() {
                    let want = model(&mut model_ids, &mut model_heads, request);
                    let got = match &d.results[r] {
                        Ok(a) => {
                            for (a, e) in a.iter().zip(request) {
                                prop_assert_eq!(&a.id, &e.id);
                            }
                            Ok(a.iter().map(|a| (a.seq, a.duplicate)).collect())
                        }
                        Err(StoreError::Conflict(c)) => Err(c.iter().map(|c| c.index).collect()),
                        Err(e) => panic!("unexpected error {e}"),
                    };
                    prop_assert_eq!(&got, &want, "request {}", r);
                    if want.is_err() {
                        prop_assert!(d.new.iter().all(|n| n.request != r));
                    }
                }
                for n in &d.new {
                    prop_assert_eq!(&n.event, &&group[n.request][n.index]);
                    prop_assert_eq!(&n.canonical, &n.event.canonical_bytes(n.seq));
                    prop_assert_eq!(n.leaf, leaf_hash(&n.canonical));
                    let log = logs.entry(n.event.tenant.as_str().to_owned()).or_default();
                    let (prev_seq, prev_chain) =
                        log.last().map_or((0, [0; 32]), |&(s, _, c)| (s, c));
                    prop_assert_eq!(n.seq, prev_seq + 1, "gap in {}", n.event.tenant.as_str());
                    prop_assert_eq!(n.chain, chain_hash(&prev_chain, &n.leaf));
                    log.push((n.seq, n.leaf, n.chain));
                }
                // Heads move exactly for the tenants written to, to their last event.
                let moved: BTreeMap<String, Head> = d
                    .heads
                    .iter()
                    .map(|(t, h)| (t.as_str().to_owned(), *h))
                    .collect();
                prop_assert_eq!(moved.len(), d.heads.len());
                for (tenant, head) in &moved {
                    let &(seq, _, chain) = logs[tenant].last().expect("written");
                    prop_assert_eq!(*head, Head { seq, chain });
                    prop_assert!(d.new.iter().any(|n| n.event.tenant.as_str() == tenant));
                }
                store.apply(&d);
                for (tenant, head) in &heads_before {
                    if !moved.contains_key(tenant) {
                        prop_assert_eq!(store.heads.get(tenant), Some(head));
                    }
                }
            }
        }
    }
}
