//! Replaying a whole log against its signed checkpoints, as `vigil verify --data-dir` does.
//!
//! The reader hands the [`Auditor`] every stored checkpoint first, then every event in the
//! order it is stored (tenants may interleave). For each tenant the auditor recomputes what the
//! store should have kept and compares:
//!
//! - `seq` must run 1, 2, 3, … without gaps or repeats;
//! - the stored chain hash of each event must be `SHA-256(previous chain ‖ leaf hash)`, from 32
//!   zero bytes; this catches a changed, removed or reordered event at the first one affected
//!   (unless whoever changed it also recomputed every later chain hash);
//! - whenever the recomputed Merkle tree reaches the size of a checkpoint, its root must be the
//!   signed one; this catches any change to the events a checkpoint covers, including one made
//!   with every hash recomputed, since nobody else can sign with the log's key;
//! - every checkpoint note must be signed by the trusted key and agree with the stored fields,
//!   and checkpoints beyond the end of the log mean events were removed.
//!
//! Per event it does two SHA-256 computations plus, on average, one node hash, with no
//! allocation and no parsing: about 1.6 million 300-byte events per second on one core (release
//! build, x86-64 with SHA extensions).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::Hash;
use crate::checkpoint::{VerifierKey, origin, verify_checkpoint};
use crate::tree::{Frontier, leaf_hash};

/// At most this many seq anomalies are reported per tenant; the rest are counted.
const MAX_SEQ_FINDINGS: u64 = 16;

/// `SHA-256(previous chain hash ‖ leaf hash)`: the chain hash stores keep with every event (the
/// chain of a tenant starts from 32 zero bytes).
pub fn chain_hash(prev: &Hash, leaf: &Hash) -> Hash {
    Sha256::new()
        .chain_update(prev)
        .chain_update(leaf)
        .finalize()
        .into()
}

/// Something wrong found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The tenant concerned; `None` for damage outside any tenant's events.
    pub tenant: Option<String>,
    /// The first bad seq, when known.
    pub seq: Option<u64>,
    /// The seqs the finding concerns (first and last), when known.
    pub range: Option<RangeInclusive<u64>>,
    /// What is wrong, for people; names the tenant, seqs and checkpoint.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the audit of one tenant's log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReport {
    /// The tenant id.
    pub tenant: String,
    /// Events replayed.
    pub events: u64,
    /// Checkpoints compared with the log (matching or not).
    pub checkpoints: u64,
    /// Size of the largest checkpoint that matched the log (0 when none did).
    pub last_verified_size: u64,
    /// Root of the tree of the replayed events.
    pub root: Hash,
}

/// The result of an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// One per tenant with events or checkpoints, by tenant name.
    pub tenants: Vec<TenantReport>,
    /// Everything found, tenant by tenant in the order found, then what only the end of the
    /// log reveals.
    pub findings: Vec<Finding>,
    /// Events replayed, all tenants.
    pub events: u64,
    /// Checkpoints compared with the log, all tenants.
    pub checkpoints_checked: u64,
}

impl AuditReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A checkpoint whose note verified, waiting for the tree to reach its size.
#[derive(Debug, Clone)]
struct Signed {
    root: Hash,
    timestamp: DateTime<Utc>,
}

/// A stored checkpoint that is not evidence: its note does not verify, or is another tenant's.
#[derive(Debug)]
struct Untrusted {
    size: u64,
    reason: String,
}

#[derive(Debug)]
struct TenantState {
    name: String,
    /// The seq the next event should have.
    expected_seq: u64,
    /// The seq of the last event replayed (0 before any).
    last_seq: u64,
    events: u64,
    /// Chain hash of the last event, as stored: the base the next event is checked against,
    /// so that one break is reported once and later events are still checked.
    chain: Hash,
    frontier: Frontier,
    /// Verified checkpoints the tree has not reached yet, by size.
    pending: BTreeMap<u64, Vec<Signed>>,
    /// Smallest key of `pending`, `u64::MAX` when none: the one comparison made per event.
    next_size: u64,
    /// The first root signed for each size, to spot two checkpoints of one size that differ.
    signed_roots: HashMap<u64, Signed>,
    untrusted: Vec<Untrusted>,
    /// Sizes of the checkpoints that matched the log, ascending.
    matched: Vec<u64>,
    checkpoints: u64,
    last_verified_size: u64,
    chain_breaks: u64,
    /// Index in the findings of the first chain break, which gets the count at the end.
    first_chain_finding: Option<usize>,
    seq_anomalies: u64,
}

impl TenantState {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            expected_seq: 1,
            last_seq: 0,
            events: 0,
            chain: [0; 32],
            frontier: Frontier::new(),
            pending: BTreeMap::new(),
            next_size: u64::MAX,
            signed_roots: HashMap::new(),
            untrusted: Vec::new(),
            matched: Vec::new(),
            checkpoints: 0,
            last_verified_size: 0,
            chain_breaks: 0,
            first_chain_finding: None,
            seq_anomalies: 0,
        }
    }

    fn finding(
        &self,
        seq: Option<u64>,
        range: Option<RangeInclusive<u64>>,
        message: String,
    ) -> Finding {
        Finding {
            tenant: Some(self.name.clone()),
            seq,
            range,
            message,
        }
    }

    #[cold]
    fn seq_anomaly(&mut self, seq: u64, findings: &mut Vec<Finding>) {
        self.seq_anomalies += 1;
        if self.seq_anomalies > MAX_SEQ_FINDINGS {
            return;
        }
        let (name, expected) = (&self.name, self.expected_seq);
        let finding = if seq > expected {
            let missing = events(expected, seq - 1, "is missing", "are missing");
            self.finding(
                Some(expected),
                Some(expected..=seq - 1),
                format!("tenant {name}: expected seq {expected}, found seq {seq}: {missing}"),
            )
        } else {
            self.finding(
                Some(seq),
                Some(seq..=seq),
                format!(
                    "tenant {name}: expected seq {expected}, found seq {seq} again (repeated or reordered)"
                ),
            )
        };
        findings.push(finding);
    }

    #[cold]
    fn chain_break(&mut self, seq: u64, findings: &mut Vec<Finding>) {
        self.chain_breaks += 1;
        if self.first_chain_finding.is_some() {
            return;
        }
        self.first_chain_finding = Some(findings.len());
        findings.push(self.finding(
            Some(seq),
            Some(seq..=seq),
            format!(
                "tenant {} seq {seq}: stored chain hash does not match the event's content and the events before it (event altered, removed or reordered)",
                self.name
            ),
        ));
    }

    /// Compares the tree, now at a pending checkpoint's size, with that checkpoint.
    #[cold]
    fn reach_checkpoints(&mut self, findings: &mut Vec<Finding>, checked: &mut u64) {
        let size = self.frontier.size();
        let Some(signed) = self.pending.remove(&size) else {
            return;
        };
        self.next_size = self.pending.keys().next().copied().unwrap_or(u64::MAX);
        let root = self.frontier.root();
        let verified_before = self.last_verified_size;
        for s in signed {
            *checked += 1;
            self.checkpoints += 1;
            if s.root == root {
                self.last_verified_size = self.last_verified_size.max(size);
                if self.matched.last() != Some(&size) {
                    self.matched.push(size);
                }
            } else {
                let first = verified_before + 1;
                findings.push(self.finding(
                    Some(first),
                    Some(first..=size),
                    format!(
                        "tenant {}: checkpoint {size} signed {} does not match the log: {} from what was signed",
                        self.name,
                        rfc3339(&s.timestamp),
                        events(first, size, "differs", "differ")
                    ),
                ));
            }
        }
    }
}

/// "event 7 was" / "events 7–9 were", for messages.
fn events(first: u64, last: u64, one: &str, many: &str) -> String {
    if first == last {
        format!("event {first} {one}")
    } else {
        format!("events {first}–{last} {many}")
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Replays logs against their checkpoints; see the [module documentation](self).
#[derive(Debug)]
pub struct Auditor {
    key: VerifierKey,
    tenants: Vec<TenantState>,
    by_name: HashMap<String, usize>,
    /// The tenant of the previous call: events mostly come in runs of one tenant, so the name
    /// is compared with it before any hashing.
    last: usize,
    findings: Vec<Finding>,
    events: u64,
    checkpoints_checked: u64,
}

impl Auditor {
    /// An auditor trusting checkpoints signed by `key`.
    pub fn new(key: VerifierKey) -> Self {
        Self {
            key,
            tenants: Vec::new(),
            by_name: HashMap::new(),
            last: usize::MAX,
            findings: Vec::new(),
            events: 0,
            checkpoints_checked: 0,
        }
    }

    fn tenant(&mut self, tenant: &str) -> usize {
        if let Some(t) = self.tenants.get(self.last)
            && t.name == tenant
        {
            return self.last;
        }
        let i = match self.by_name.get(tenant) {
            Some(&i) => i,
            None => {
                let i = self.tenants.len();
                self.tenants.push(TenantState::new(tenant));
                self.by_name.insert(tenant.to_owned(), i);
                i
            }
        };
        self.last = i;
        i
    }

    /// A stored checkpoint of `tenant`; its note is verified against the key now (a failure
    /// becomes a Finding). Give every checkpoint of a tenant before its events: a checkpoint
    /// smaller than what was already replayed cannot be compared any more (and is reported).
    pub fn add_checkpoint(&mut self, tenant: &str, size: u64, root: &Hash, note: &str) {
        let i = self.tenant(tenant);
        let Self {
            tenants,
            findings,
            key,
            checkpoints_checked,
            ..
        } = self;
        let Some(t) = tenants.get_mut(i) else { return };
        let verified = match verify_checkpoint(note, key) {
            Ok(v) => v,
            Err(e) => {
                t.untrusted.push(Untrusted {
                    size,
                    reason: e.to_string(),
                });
                return;
            }
        };
        let want_origin = origin(tenant);
        if verified.origin != want_origin {
            t.untrusted.push(Untrusted {
                size,
                reason: format!(
                    "its note is signed for origin {}, not {want_origin}",
                    verified.origin
                ),
            });
            return;
        }
        if verified.size != size || verified.root != *root {
            // The note is the evidence: compare the log with what it signs, and report the
            // stored fields that disagree with it.
            findings.push(t.finding(
                None,
                None,
                format!(
                    "tenant {tenant}: stored checkpoint fields (size {size}, root {}) disagree with its signed note (size {}, root {})",
                    hex::encode(root),
                    verified.size,
                    hex::encode(verified.root)
                ),
            ));
        }
        let size = verified.size;
        let signed = Signed {
            root: verified.root,
            timestamp: verified.timestamp,
        };
        match t.signed_roots.get(&size) {
            Some(first) if first.root != signed.root => {
                findings.push(t.finding(
                    None,
                    None,
                    format!(
                        "tenant {tenant}: two checkpoints of size {size} sign different roots ({} signed {}, {} signed {}): the log was forked or rewritten",
                        hex::encode(first.root),
                        rfc3339(&first.timestamp),
                        hex::encode(signed.root),
                        rfc3339(&signed.timestamp)
                    ),
                ));
            }
            Some(_) => {}
            None => {
                t.signed_roots.insert(size, signed.clone());
            }
        }
        let replayed = t.frontier.size();
        if size < replayed {
            findings.push(t.finding(
                None,
                None,
                format!(
                    "tenant {tenant}: checkpoint {size} was given after the audit had replayed {replayed} events, so it was not compared with the log"
                ),
            ));
            return;
        }
        t.pending.entry(size).or_default().push(signed);
        t.next_size = t.next_size.min(size);
        if size == replayed {
            t.reach_checkpoints(findings, checkpoints_checked);
        }
    }

    /// The next event of `tenant` (events of one tenant arrive in the order they are stored;
    /// tenants may interleave). `stored_chain` is the chain hash the store kept for it.
    pub fn push(&mut self, tenant: &str, seq: u64, canonical: &[u8], stored_chain: &Hash) {
        let i = self.tenant(tenant);
        let Self {
            tenants,
            findings,
            events,
            checkpoints_checked,
            ..
        } = self;
        let Some(t) = tenants.get_mut(i) else { return };
        *events += 1;
        t.events += 1;
        if seq != t.expected_seq {
            t.seq_anomaly(seq, findings);
        }
        t.expected_seq = t.expected_seq.max(seq.saturating_add(1));
        t.last_seq = seq;

        let leaf = leaf_hash(canonical);
        if chain_hash(&t.chain, &leaf) != *stored_chain {
            t.chain_break(seq, findings);
        }
        t.chain = *stored_chain;
        t.frontier.push(leaf, |_| {});
        if t.frontier.size() == t.next_size {
            t.reach_checkpoints(findings, checkpoints_checked);
        }
    }

    /// Records damage found by the reader (a checksum mismatch in a segment, etc.) at
    /// `tenant`'s position — after its event `after_seq` — or, with `tenant` `None`, outside
    /// any tenant's events (then `after_seq` is only quoted in the message, when not 0).
    pub fn damaged(&mut self, tenant: Option<&str>, after_seq: u64, message: String) {
        let finding = match tenant {
            Some(name) => Finding {
                tenant: Some(name.to_owned()),
                seq: Some(after_seq.saturating_add(1)),
                range: None,
                message: format!("tenant {name}: damage after seq {after_seq}: {message}"),
            },
            None => Finding {
                tenant: None,
                seq: None,
                range: None,
                message: if after_seq == 0 {
                    format!("damage: {message}")
                } else {
                    format!("damage after seq {after_seq}: {message}")
                },
            },
        };
        self.findings.push(finding);
    }

    /// Ends the audit: reports what only the end of the log reveals (checkpoints beyond it,
    /// checkpoints that cannot be trusted, counts of repeated problems).
    pub fn finish(self) -> AuditReport {
        let Self {
            mut tenants,
            mut findings,
            events: total_events,
            checkpoints_checked,
            ..
        } = self;
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        let mut reports = Vec::with_capacity(tenants.len());
        for t in tenants {
            let name = &t.name;
            let size = t.frontier.size();
            if let Some(at) = t.first_chain_finding
                && t.chain_breaks > 1
                && let Some(f) = findings.get_mut(at)
            {
                f.message.push_str(&format!(
                    "; {} chain breaks in all, only the first is reported",
                    t.chain_breaks
                ));
            }
            if t.seq_anomalies > MAX_SEQ_FINDINGS {
                findings.push(t.finding(
                    None,
                    None,
                    format!(
                        "tenant {name}: {} more seq gaps or repeats not reported one by one",
                        t.seq_anomalies - MAX_SEQ_FINDINGS
                    ),
                ));
            }
            // With gaps or repeats the last seq is not the number of events: say both.
            let end = if t.last_seq == size {
                format!("seq {size}")
            } else {
                format!("seq {} after {size} events", t.last_seq)
            };
            for (&cp_size, signed) in &t.pending {
                for s in signed {
                    findings.push(t.finding(
                        Some(size + 1),
                        Some(size + 1..=cp_size),
                        format!(
                            "log of {name} ends at {end} but checkpoint {cp_size} (signed {}) covers {cp_size} events: {}",
                            rfc3339(&s.timestamp),
                            events(size + 1, cp_size, "was removed", "were removed")
                        ),
                    ));
                }
            }
            for u in &t.untrusted {
                // Events that no trustworthy checkpoint covers because this one is not.
                let covered = t.matched.iter().any(|&s| s >= u.size);
                let first = t
                    .matched
                    .iter()
                    .rfind(|&&s| s < u.size)
                    .map_or(1, |s| s + 1);
                let (seq, range, consequence) = if covered || first > u.size {
                    (None, None, String::new())
                } else {
                    (
                        Some(first),
                        Some(first..=u.size),
                        format!(
                            "; {} not covered by a valid checkpoint",
                            events(first, u.size, "is", "are")
                        ),
                    )
                };
                findings.push(t.finding(
                    seq,
                    range,
                    format!(
                        "tenant {name}: checkpoint {} cannot be trusted: {}{consequence}",
                        u.size, u.reason
                    ),
                ));
            }
            reports.push(TenantReport {
                tenant: t.name.clone(),
                events: t.events,
                checkpoints: t.checkpoints,
                last_verified_size: t.last_verified_size,
                root: t.frontier.root(),
            });
        }
        AuditReport {
            tenants: reports,
            findings,
            events: total_events,
            checkpoints_checked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SigningKey;
    use chrono::TimeZone as _;

    /// A stored event: seq, canonical bytes, stored chain hash.
    type Event = (u64, Vec<u8>, Hash);

    fn event_bytes(tenant: &str, seq: u64, variant: &str) -> Vec<u8> {
        format!(
            r#"{{"action":"user.login","actor":{{"id":"u{seq}"}},"seq":{seq},"tenant":"{tenant}","variant":"{variant}"}}"#
        )
        .into_bytes()
    }

    /// Events with seq 1..=n, chained as a store does.
    fn log(tenant: &str, n: u64) -> Vec<Event> {
        rechain(
            (1..=n)
                .map(|s| (s, event_bytes(tenant, s, "original"), [0; 32]))
                .collect(),
        )
    }

    /// Recomputes every chain hash, as an attacker with write access would.
    fn rechain(mut events: Vec<Event>) -> Vec<Event> {
        let mut prev = [0u8; 32];
        for e in &mut events {
            e.2 = chain_hash(&prev, &leaf_hash(&e.1));
            prev = e.2;
        }
        events
    }

    fn root_of(events: &[Event]) -> Hash {
        let mut f = Frontier::new();
        for e in events {
            f.push(leaf_hash(&e.1), |_| {});
        }
        f.root()
    }

    struct Checkpoint {
        size: u64,
        root: Hash,
        note: String,
    }

    fn checkpoint(key: &SigningKey, tenant: &str, events: &[Event], size: u64) -> Checkpoint {
        let root = root_of(&events[..size as usize]);
        let time = Utc.timestamp_opt(1_700_000_000 + size as i64, 0).unwrap();
        Checkpoint {
            size,
            root,
            note: key.sign_checkpoint(&origin(tenant), size, &root, time),
        }
    }

    fn audit(
        key: &SigningKey,
        checkpoints: &[(&str, &Checkpoint)],
        events: &[(&str, &Event)],
    ) -> AuditReport {
        let mut a = Auditor::new(key.verifier());
        for (tenant, c) in checkpoints {
            a.add_checkpoint(tenant, c.size, &c.root, &c.note);
        }
        for (tenant, (seq, bytes, chain)) in events {
            a.push(tenant, *seq, bytes, chain);
        }
        a.finish()
    }

    fn audit_one(key: &SigningKey, checkpoints: &[Checkpoint], events: &[Event]) -> AuditReport {
        let cps: Vec<_> = checkpoints.iter().map(|c| ("acme", c)).collect();
        let evs: Vec<_> = events.iter().map(|e| ("acme", e)).collect();
        audit(key, &cps, &evs)
    }

    fn messages(r: &AuditReport) -> Vec<String> {
        r.findings.iter().map(|f| f.message.clone()).collect()
    }

    fn key() -> SigningKey {
        SigningKey::generate("vigil.test").unwrap()
    }

    #[test]
    fn a_clean_log_of_interleaved_tenants() {
        let key = key();
        let acme = log("acme", 100);
        let globex = log("globex", 37);
        let cps = [
            checkpoint(&key, "acme", &acme, 50),
            checkpoint(&key, "acme", &acme, 100),
            checkpoint(&key, "globex", &globex, 37),
        ];
        let mut interleaved = Vec::new();
        for (i, e) in acme.iter().enumerate() {
            interleaved.push(("acme", e));
            if let Some(e) = globex.get(i) {
                interleaved.push(("globex", e));
            }
        }
        let empty_root = crate::tree::EMPTY_ROOT;
        let zero = Checkpoint {
            size: 0,
            root: empty_root,
            note: key.sign_checkpoint("vigil/acme", 0, &empty_root, Utc::now()),
        };
        let r = audit(
            &key,
            &[
                ("acme", &cps[0]),
                ("acme", &cps[1]),
                ("globex", &cps[2]),
                ("acme", &zero),
            ],
            &interleaved,
        );
        assert!(r.is_clean(), "{:?}", messages(&r));
        assert_eq!((r.events, r.checkpoints_checked), (137, 4));
        assert_eq!(r.tenants.len(), 2);
        assert_eq!(
            r.tenants[0],
            TenantReport {
                tenant: "acme".into(),
                events: 100,
                checkpoints: 3,
                last_verified_size: 100,
                root: root_of(&acme),
            }
        );
        assert_eq!(r.tenants[1].tenant, "globex");
        assert_eq!(r.tenants[1].last_verified_size, 37);
    }

    #[test]
    fn flipped_byte() {
        let key = key();
        let mut events = log("acme", 60);
        let cps = [
            checkpoint(&key, "acme", &events, 20),
            checkpoint(&key, "acme", &events, 50),
        ];
        events[29].1[10] ^= 1; // seq 30
        let r = audit_one(&key, &cps, &events);
        assert_eq!(
            messages(&r),
            [
                "tenant acme seq 30: stored chain hash does not match the event's content and the events before it (event altered, removed or reordered)".to_owned(),
                "tenant acme: checkpoint 50 signed 2023-11-14T22:14:10Z does not match the log: events 21–50 differ from what was signed".to_owned(),
            ]
        );
        assert_eq!(r.findings[0].seq, Some(30));
        assert_eq!(r.findings[1].range, Some(21..=50));
        assert_eq!(r.tenants[0].last_verified_size, 20);
    }

    #[test]
    fn deleted_event_naive_and_renumbered() {
        let key = key();
        let events = log("acme", 100);
        let cps = [
            checkpoint(&key, "acme", &events, 40),
            checkpoint(&key, "acme", &events, 50),
            checkpoint(&key, "acme", &events, 100),
        ];
        // Naive: seq 42 is simply gone.
        let mut naive = events.clone();
        naive.remove(41);
        let r = audit_one(&key, &cps, &naive);
        let m = messages(&r);
        assert_eq!(
            m[0],
            "tenant acme: expected seq 42, found seq 43: event 42 is missing"
        );
        assert_eq!(r.findings[0].range, Some(42..=42));
        assert!(
            m[1].starts_with("tenant acme seq 43: stored chain hash does not match"),
            "{m:?}"
        );
        assert!(
            m[2].contains("checkpoint 50 signed") && m[2].contains("events 41–50 differ"),
            "{m:?}"
        );
        assert_eq!(
            m[3],
            "log of acme ends at seq 100 after 99 events but checkpoint 100 (signed 2023-11-14T22:15:00Z) covers 100 events: event 100 was removed"
        );
        assert_eq!(m.len(), 4, "{m:?}");

        // Careful: later events renumbered and every chain hash recomputed; only the
        // checkpoints can tell.
        let mut renumbered = events.clone();
        renumbered.remove(41);
        for (i, e) in renumbered.iter_mut().enumerate() {
            e.0 = i as u64 + 1;
        }
        let renumbered = rechain(renumbered);
        let r = audit_one(&key, &cps, &renumbered);
        let m = messages(&r);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("checkpoint 50 signed") && m[0].contains("events 41–50 differ"),
            "{m:?}"
        );
        assert_eq!(r.findings[0].seq, Some(41));
        assert_eq!(
            m[1],
            "log of acme ends at seq 99 but checkpoint 100 (signed 2023-11-14T22:15:00Z) covers 100 events: event 100 was removed"
        );
        assert_eq!(r.findings[1].range, Some(100..=100));
    }

    #[test]
    fn truncated_and_reappended() {
        let key = key();
        let events = log("acme", 100);
        let cps = [
            checkpoint(&key, "acme", &events, 50),
            checkpoint(&key, "acme", &events, 100),
        ];
        let mut forged = events[..60].to_vec();
        forged.extend((61..=100).map(|s| (s, event_bytes("acme", s, "forged"), [0; 32])));
        let forged = rechain(forged);
        let r = audit_one(&key, &cps, &forged);
        assert_eq!(
            messages(&r),
            [
                "tenant acme: checkpoint 100 signed 2023-11-14T22:15:00Z does not match the log: events 51–100 differ from what was signed"
            ]
        );
        assert_eq!(r.findings[0].range, Some(51..=100));
        assert_eq!(r.tenants[0].last_verified_size, 50);

        // Truncated without re-appending: the checkpoint beyond the end says what was removed.
        let r = audit_one(&key, &cps, &events[..70]);
        assert_eq!(
            messages(&r),
            [
                "log of acme ends at seq 70 but checkpoint 100 (signed 2023-11-14T22:15:00Z) covers 100 events: events 71–100 were removed"
            ]
        );
    }

    #[test]
    fn swapped_events() {
        let key = key();
        let events = log("acme", 30);
        let cps = [
            checkpoint(&key, "acme", &events, 10),
            checkpoint(&key, "acme", &events, 30),
        ];
        // Contents of seq 15 and 16 swapped, renumbered, chain recomputed.
        let mut swapped = events.clone();
        swapped.swap(14, 15);
        swapped[14].0 = 15;
        swapped[15].0 = 16;
        let r = audit_one(&key, &cps, &rechain(swapped));
        assert_eq!(
            messages(&r),
            [
                "tenant acme: checkpoint 30 signed 2023-11-14T22:13:50Z does not match the log: events 11–30 differ from what was signed"
            ]
        );
        // Swapped as stored, seq and chain included.
        let mut naive = events.clone();
        naive.swap(14, 15);
        let r = audit_one(&key, &cps, &naive);
        let m = messages(&r);
        assert_eq!(
            m[0],
            "tenant acme: expected seq 15, found seq 16: event 15 is missing"
        );
        assert_eq!(
            m[1],
            "tenant acme seq 16: stored chain hash does not match the event's content and the events before it (event altered, removed or reordered); 3 chain breaks in all, only the first is reported"
        );
        assert_eq!(
            m[2],
            "tenant acme: expected seq 17, found seq 15 again (repeated or reordered)"
        );
        assert!(m[3].contains("events 11–30 differ"), "{m:?}");
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn tail_replaced_and_resigned_with_another_key() {
        let key = key();
        let attacker = SigningKey::generate("vigil.test").unwrap();
        let events = log("acme", 100);
        let mut forged = events[..50].to_vec();
        forged.extend((51..=100).map(|s| (s, event_bytes("acme", s, "forged"), [0; 32])));
        let forged = rechain(forged);
        let cps = [
            checkpoint(&key, "acme", &events, 50),
            checkpoint(&attacker, "acme", &forged, 100),
        ];
        let r = audit_one(&key, &cps, &forged);
        assert_eq!(
            messages(&r),
            [format!(
                "tenant acme: checkpoint 100 cannot be trusted: checkpoint is not signed by the trusted key vigil.test+{:08x}; signed by vigil.test+{:08x}, vigil.test+{:08x}; events 51–100 are not covered by a valid checkpoint",
                key.key_id(),
                attacker.key_id(),
                attacker.verifier().cosignature_key_id()
            )]
        );
        assert_eq!(r.findings[0].range, Some(51..=100));
        assert_eq!(r.tenants[0].last_verified_size, 50);
        assert_eq!(r.checkpoints_checked, 1);
    }

    #[test]
    fn checkpoint_problems() {
        let key = key();
        let events = log("acme", 20);
        let good = checkpoint(&key, "acme", &events, 10);
        // Stored fields that disagree with the note: the note is what counts.
        let r = audit_one(
            &key,
            &[Checkpoint {
                size: 11,
                root: [0; 32],
                note: good.note.clone(),
            }],
            &events,
        );
        let m = messages(&r);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("tenant acme: stored checkpoint fields (size 11, root 0000"),
            "{m:?}"
        );
        assert!(
            m[0].contains("disagree with its signed note (size 10, root"),
            "{m:?}"
        );
        assert_eq!(r.tenants[0].last_verified_size, 10);

        // Two checkpoints of one size with different roots.
        let mut other = events.clone();
        other[3].1.push(b' ');
        let fork = checkpoint(&key, "acme", &rechain(other), 10);
        let r = audit_one(&key, &[good, fork], &events);
        let m = messages(&r);
        assert!(
            m[0].starts_with("tenant acme: two checkpoints of size 10 sign different roots ("),
            "{m:?}"
        );
        assert!(m[0].ends_with("the log was forked or rewritten"), "{m:?}");
        assert!(
            m[1].contains("checkpoint 10 signed") && m[1].contains("events 1–10 differ"),
            "{m:?}"
        );
        assert_eq!(m.len(), 2);

        // Another tenant's checkpoint, a tampered note, garbage, and one given too late.
        let globex = checkpoint(&key, "globex", &log("globex", 5), 5);
        let tampered = checkpoint(&key, "acme", &events, 15)
            .note
            .replacen("\n15\n", "\n14\n", 1);
        let mut a = Auditor::new(key.verifier());
        a.add_checkpoint("acme", 5, &globex.root, &globex.note);
        a.add_checkpoint("acme", 14, &[0; 32], &tampered);
        a.add_checkpoint("acme", 3, &[0; 32], "not a note");
        for e in &events {
            a.push("acme", e.0, &e.1, &e.2);
        }
        let late = checkpoint(&key, "acme", &events, 12);
        a.add_checkpoint("acme", late.size, &late.root, &late.note);
        let m = messages(&a.finish());
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0],
            "tenant acme: checkpoint 12 was given after the audit had replayed 20 events, so it was not compared with the log"
        );
        assert_eq!(
            m[1],
            "tenant acme: checkpoint 5 cannot be trusted: its note is signed for origin vigil/globex, not vigil/acme; events 1–5 are not covered by a valid checkpoint"
        );
        assert!(
            m[2].starts_with(
                "tenant acme: checkpoint 14 cannot be trusted: bad signature by vigil.test+"
            ),
            "{m:?}"
        );
        assert!(
            m[3].starts_with(
                "tenant acme: checkpoint 3 cannot be trusted: malformed checkpoint note: "
            ),
            "{m:?}"
        );
    }

    #[test]
    fn damage_and_repeats() {
        let key = key();
        let events = log("acme", 40);
        let mut a = Auditor::new(key.verifier());
        for e in &events[..10] {
            a.push("acme", e.0, &e.1, &e.2);
        }
        a.damaged(
            Some("acme"),
            10,
            "segment 3: checksum mismatch at offset 4096".into(),
        );
        a.damaged(None, 0, "segment 4 header unreadable".into());
        // A repeat of seq 10, then the log goes on.
        a.push("acme", events[9].0, &events[9].1, &events[9].2);
        for e in &events[10..] {
            a.push("acme", e.0, &e.1, &e.2);
        }
        let r = a.finish();
        let m = messages(&r);
        assert_eq!(
            m[0],
            "tenant acme: damage after seq 10: segment 3: checksum mismatch at offset 4096"
        );
        assert_eq!(r.findings[0].seq, Some(11));
        assert_eq!(m[1], "damage: segment 4 header unreadable");
        assert_eq!(r.findings[1].tenant, None);
        assert_eq!(
            m[2],
            "tenant acme: expected seq 11, found seq 10 again (repeated or reordered)"
        );
        assert!(
            m[3].starts_with("tenant acme seq 10: stored chain hash"),
            "{m:?}"
        );
        // The stored chain is the new base: seq 11 chains to the repeated event's stored hash,
        // which is seq 10's, so the repeat is the only break.
        assert_eq!(m.len(), 4, "{m:?}");
    }

    #[test]
    fn many_gaps_are_counted_not_listed() {
        let key = key();
        let mut a = Auditor::new(key.verifier());
        let mut prev = [0u8; 32];
        for seq in (1..=200u64).step_by(2) {
            let bytes = event_bytes("acme", seq, "x");
            prev = chain_hash(&prev, &leaf_hash(&bytes));
            a.push("acme", seq, &bytes, &prev);
        }
        let m = messages(&a.finish());
        assert_eq!(m.len(), MAX_SEQ_FINDINGS as usize + 1);
        assert_eq!(
            m[0],
            "tenant acme: expected seq 2, found seq 3: event 2 is missing"
        );
        assert_eq!(
            m[16],
            "tenant acme: 83 more seq gaps or repeats not reported one by one"
        );
    }

    #[test]
    fn chain_hash_is_the_stores() {
        // Pinned to the value of vigil-event's `chain_hash` for the first event of a log whose
        // canonical bytes are empty: SHA-256(32 zero bytes ‖ SHA-256(0x00)).
        let leaf = leaf_hash(b"");
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(leaf);
        let want: Hash = h.finalize().into();
        assert_eq!(chain_hash(&[0; 32], &leaf), want);
    }
}
