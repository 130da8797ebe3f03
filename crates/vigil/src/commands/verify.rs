//! `vigil verify`: check that a log is intact and only grew.
//!
//! - `--data-dir DIR` (the default form): replays the raw log of a stopped embedded store,
//!   recomputing every leaf and chain hash, against every kept checkpoint.
//! - `--store postgres://…`: the same against a PostgreSQL store.
//! - `--checkpoint saved.json`: a checkpoint saved earlier must be consistent with the
//!   server's current one.
//! - `EVENT.json`: one event with its inclusion proof, offline.
//!
//! Anything wrong is printed and makes the command fail (exit status 1, code `verify_failed`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use vigil_integrity::audit::{AuditReport, Auditor};
use vigil_integrity::checkpoint::{CheckpointJson, SigningKey, VerifierKey};
use vigil_integrity::proof::{ConsistencyProof, InclusionProof};
use vigil_integrity::tree::leaf_hash;
use vigil_store::Store;
use vigil_store_embedded::scan::{self, LogEvent, LogVisitor};
use vigil_store_postgres::{PgConfig, PgStore};

use crate::args::{ClientArgs, connect};
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An event as `GET /v1/events/{id}?proof=true` returned it (`vigil query`'s JSON works
    /// too with --proof): checked offline against --key.
    #[arg(value_name = "EVENT.json", conflicts_with_all = ["checkpoint", "store"])]
    pub event: Option<PathBuf>,
    /// The inclusion proof, when it is not the event's `proof` member.
    #[arg(long, value_name = "FILE", requires = "event")]
    pub proof: Option<PathBuf>,
    /// The trusted public key: a file holding the C2SP verifier key (`vigil keys signing`) or
    /// the JSON of `GET /v1/checkpoint/key`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Data directory of a stopped server: replay its raw log against its checkpoints.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = crate::config::DEFAULT_DATA_DIR,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Verify a PostgreSQL store instead of a data directory (needs --key).
    #[arg(long, value_name = "URL", conflicts_with = "checkpoint")]
    pub store: Option<String>,
    /// A checkpoint saved earlier from `GET /v1/checkpoint` (or `vigil verify`'s JSON): check
    /// the server at --url still extends it.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: where to write the server's current checkpoint once verified, for
    /// the next run.
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    pub save: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// `text` for people, `json` for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = VerifyFormat::Text)]
    pub format: VerifyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyFormat {
    Text,
    Json,
}

pub async fn run(args: VerifyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(event) = &args.event {
        return verify_event(&args, event, out);
    }
    if let Some(saved) = &args.checkpoint {
        return verify_growth(&args, saved, out).await;
    }
    if let Some(url) = &args.store {
        return verify_postgres(&args, url, out).await;
    }
    verify_data_dir(&args, out).await
}

fn failed(message: impl Into<String>) -> anyhow::Error {
    CliError::new("verify_failed", message).into()
}

/// Reads a trusted key file: a C2SP verifier key, or JSON with a `vkey` member.
fn read_key(path: &Path) -> anyhow::Result<VerifierKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let text = text.trim();
    let vkey = if text.starts_with('{') {
        let doc: Value = serde_json::from_str(text)
            .with_context(|| format!("key file {} is not valid JSON", path.display()))?;
        doc.get("vkey")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                CliError::new(
                    "usage",
                    format!("key file {} has no \"vkey\" member", path.display()),
                )
            })?
    } else {
        text.to_owned()
    };
    VerifierKey::parse(&vkey).with_context(|| format!("in key file {}", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// `vigil verify EVENT.json --key K`: the event's canonical bytes, its leaf, the audit path to
/// the signed checkpoint's root, and the checkpoint's signatures.
fn verify_event(args: &VerifyArgs, path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let key_path = args.key.as_deref().ok_or_else(|| {
        CliError::new(
            "usage",
            "verifying an event offline needs --key (the log's public key, from `vigil keys signing` or GET /v1/checkpoint/key)",
        )
    })?;
    let key = read_key(key_path)?;
    let mut event = read_json(path)?;
    let object = event.as_object_mut().ok_or_else(|| {
        failed(format!(
            "{} is not a JSON object (an event)",
            path.display()
        ))
    })?;
    let embedded = object.remove("proof");
    object.remove("hash");
    let proof_value = match &args.proof {
        Some(p) => read_json(p)?,
        None => embedded.ok_or_else(|| {
            failed(format!(
                "{} has no `proof` member: fetch it with ?proof=true or pass --proof",
                path.display()
            ))
        })?,
    };
    let proof: InclusionProof = serde_json::from_value(proof_value)
        .map_err(|e| failed(format!("the proof is not an inclusion proof: {e}")))?;
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| failed("the event has no numeric `seq`"))?;
    let tenant = object
        .get("tenant")
        .and_then(Value::as_str)
        .ok_or_else(|| failed("the event has no `tenant`"))?
        .to_owned();
    if seq == 0 || proof.leaf_index != seq - 1 {
        return Err(failed(format!(
            "the proof is for leaf {}, but the event has seq {seq} (leaf {})",
            proof.leaf_index,
            seq.saturating_sub(1)
        )));
    }
    let canonical = vigil_event::to_canonical_bytes(&event);
    let checkpoint = proof
        .verify_checkpointed(&leaf_hash(&canonical), &key)
        .map_err(|e| match e {
            vigil_integrity::proof::ProofError::RootMismatch { .. } => failed(format!(
                "event seq {seq} of tenant {tenant} is not what the log holds: its content does not lead to the signed root (altered since it was proven, or the proof is another event's): {e}"
            )),
            e => failed(format!("event seq {seq} of tenant {tenant}: {e}")),
        })?;
    if checkpoint.tenant() != tenant {
        return Err(failed(format!(
            "the checkpoint is for tenant {}, the event is tenant {tenant}'s",
            checkpoint.tenant()
        )));
    }
    match args.format {
        VerifyFormat::Text => writeln!(
            out,
            "ok: event seq {seq} of tenant {tenant} is in the log of {} events signed by {} at {}",
            checkpoint.size,
            key.to_vkey(),
            checkpoint.timestamp.to_rfc3339()
        )?,
        VerifyFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "ok": true, "tenant": tenant, "seq": seq, "tree_size": checkpoint.size,
                "root_hash": hex::encode(checkpoint.root), "signed_at": checkpoint.timestamp,
            })
        )?,
    }
    Ok(())
}

/// `vigil verify --url U --checkpoint saved.json`: the server's current checkpoint is signed
/// by the trusted key and a consistency proof shows it extends the saved one.
async fn verify_growth(args: &VerifyArgs, saved: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = connect(&args.client)?;
    let key = match &args.key {
        Some(path) => read_key(path)?,
        None => {
            let doc = client
                .signing_key()
                .await
                .context("fetching the server's key")?;
            let vkey = doc.get("vkey").and_then(Value::as_str).unwrap_or_default();
            eprintln!(
                "warning: no --key given: trusting the key the server presents ({vkey}); pass the key you saved to detect a server that re-signed its log"
            );
            VerifierKey::parse(vkey).context("the server's key")?
        }
    };
    let old: CheckpointJson = serde_json::from_value(read_json(saved)?).map_err(|e| {
        failed(format!(
            "{} is not a saved checkpoint: {e}",
            saved.display()
        ))
    })?;
    let old_signed = old
        .verify(&key)
        .map_err(|e| failed(format!("the saved checkpoint: {e}")))?;
    let new: CheckpointJson = serde_json::from_value(
        client
            .checkpoint(None)
            .await
            .context("fetching the current checkpoint")?,
    )
    .map_err(|e| failed(format!("the server's checkpoint is malformed: {e}")))?;
    let new_signed = new
        .verify(&key)
        .map_err(|e| failed(format!("the server's current checkpoint: {e}")))?;
    if new_signed.origin != old_signed.origin {
        return Err(failed(format!(
            "the saved checkpoint is of {}, the server's of {}: use the credential of the same tenant",
            old_signed.origin, new_signed.origin
        )));
    }
    if new_signed.size < old_signed.size {
        return Err(failed(format!(
            "the log shrank: the saved checkpoint covers {} events, the server's current one {}",
            old_signed.size, new_signed.size
        )));
    }
    if new_signed.size > old_signed.size {
        let proof: ConsistencyProof = serde_json::from_value(
            client
                .consistency_proof(old_signed.size, new_signed.size)
                .await
                .context("fetching the consistency proof")?,
        )
        .map_err(|e| failed(format!("the server's consistency proof is malformed: {e}")))?;
        if proof.from != old_signed.size || proof.to != new_signed.size {
            return Err(failed("the server answered a proof for other sizes"));
        }
        proof.verify(&old_signed.root, &new_signed.root).map_err(|e| {
            failed(format!(
                "the log of {} events signed at {} is not an extension of the saved one of {} events: {e}",
                new_signed.size, new_signed.timestamp, old_signed.size
            ))
        })?;
    } else if new_signed.root != old_signed.root {
        return Err(failed(format!(
            "two checkpoints of {} events with different roots: the log was rewritten (a fork)",
            new_signed.size
        )));
    }
    if let Some(path) = &args.save {
        let text = serde_json::to_string_pretty(&new)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    match args.format {
        VerifyFormat::Text if new_signed.size == old_signed.size => writeln!(
            out,
            "ok: {} still holds the {} of the saved checkpoint, unchanged (checkpoint signed {})",
            new_signed.origin,
            counted(old_signed.size, "event", "events"),
            new_signed.timestamp.to_rfc3339()
        )?,
        VerifyFormat::Text => writeln!(
            out,
            "ok: {} grew from {} to {} events and only grew (checkpoint signed {})",
            new_signed.origin,
            old_signed.size,
            new_signed.size,
            new_signed.timestamp.to_rfc3339()
        )?,
        VerifyFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"ok": true, "origin": new_signed.origin, "from": old_signed.size, "to": new_signed.size, "checkpoint": new})
        )?,
    }
    Ok(())
}

/// The key `--data-dir` checks against: `--key`, else the data directory's own signing key
/// (with a warning: whoever could alter the log could have replaced that file too).
fn data_dir_key(args: &VerifyArgs) -> anyhow::Result<VerifierKey> {
    if let Some(path) = &args.key {
        return read_key(path);
    }
    let path = args.data_dir.join("signing.key");
    let key = SigningKey::load(&path).with_context(|| {
        format!(
            "no --key given and the data directory's own key {} cannot be read",
            path.display()
        )
    })?;
    eprintln!(
        "warning: no --key given: trusting {} ({}); pass the public key you published to detect a log re-signed with another key",
        path.display(),
        key.verifier().to_vkey()
    );
    Ok(key.verifier())
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

struct DirVisitor {
    auditor: Auditor,
    bar: ProgressBar,
    /// The last event read: damage is reported as following it.
    last: Option<(String, u64)>,
}

impl LogVisitor for DirVisitor {
    fn event(&mut self, e: LogEvent<'_>) {
        self.auditor.push(e.tenant, e.seq, e.canonical, e.chain);
        match &mut self.last {
            Some((tenant, seq)) if tenant == e.tenant => *seq = e.seq,
            last => *last = Some((e.tenant.to_owned(), e.seq)),
        }
    }
    fn damaged(&mut self, message: String) {
        let message = match &self.last {
            Some((tenant, seq)) => {
                format!("{message} (the last event read before it: tenant {tenant} seq {seq})")
            }
            None => message,
        };
        self.auditor.damaged(None, 0, message);
    }
    fn progress(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

async fn verify_data_dir(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    if !dir.join("log").is_dir() {
        return Err(CliError::new(
            "usage",
            format!(
                "{} is not a vigil data directory (no log/ in it)",
                dir.display()
            ),
        )
        .into());
    }
    let key = data_dir_key(args)?;
    let started = std::time::Instant::now();
    let (report, summary) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut auditor = Auditor::new(key);
        for (tenant, cps) in scan::checkpoints(&dir).context("reading checkpoints")? {
            for cp in cps {
                auditor.add_checkpoint(&tenant, cp.size, &cp.root, &cp.note);
            }
        }
        let total = scan::log_bytes(&dir).context("listing the log")?;
        let mut visitor = DirVisitor {
            auditor,
            bar: progress_bar(total, "verifying"),
            last: None,
        };
        let summary = scan::scan_log(&dir, &mut visitor)
            .with_context(|| format!("reading the log of {}", dir.display()))?;
        visitor.bar.finish_and_clear();
        Ok((visitor.auditor.finish(), summary))
    })
    .await
    .context("verification task failed")??;
    if summary.unacknowledged_bytes > 0 {
        eprintln!(
            "note: {} bytes at the end of the newest log were never acknowledged (an interrupted write); the next start removes them",
            summary.unacknowledged_bytes
        );
    }
    print_report(&report, started.elapsed(), args.format, out)
}

async fn verify_postgres(args: &VerifyArgs, url: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let key_path = args.key.as_deref().ok_or_else(|| {
        CliError::new(
            "usage",
            "verifying a PostgreSQL store needs --key (the log's public key)",
        )
    })?;
    let key = read_key(key_path)?;
    let started = std::time::Instant::now();
    // Read-only: no migration, partition, tree or writer, and read-only sessions, so the audit
    // never changes the database it audits.
    let store = PgStore::connect_read_only(PgConfig::new(url))
        .await
        .context("opening the PostgreSQL store read-only")?;
    let result = audit_store(&store, key).await;
    let _ = store.shutdown().await;
    print_report(&result?, started.elapsed(), args.format, out)
}

/// Events per read when replaying a PostgreSQL log.
const READ_BATCH: usize = 2_000;

/// Replays every tenant's log of `store`, in seq order, against its checkpoints.
///
/// A tenant's log is read by keyset on seq up to the larger of its tree size and its largest
/// checkpoint, as both were when its turn came: events appended during the audit are left to
/// the next one, and events missing at the end are reported (by the auditor against the
/// checkpoints, here against the tree size).
async fn audit_store(store: &PgStore, key: VerifierKey) -> anyhow::Result<AuditReport> {
    let mut auditor = Auditor::new(key);
    let sizes = store.tree_sizes().await.context("listing tenants")?;
    let bar = progress_bar(sizes.iter().map(|(_, s)| *s).sum(), "verifying");
    for (tenant, size) in sizes {
        let checkpoints = store
            .checkpoints(&tenant)
            .await
            .with_context(|| format!("reading the checkpoints of tenant {tenant}"))?;
        let signed = checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        let end = signed.max(size);
        for cp in &checkpoints {
            auditor.add_checkpoint(tenant.as_str(), cp.size, &cp.root, &cp.note);
        }
        // `after`: the last seq read; `replayed`: the last one given to the auditor.
        let (mut after, mut replayed) = (0, 0);
        while after < end {
            let events = store
                .log_range(&tenant, after, READ_BATCH)
                .await
                .with_context(|| format!("reading tenant {tenant}'s log after seq {after}"))?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            for e in events.iter().take_while(|e| e.seq <= end) {
                auditor.push(tenant.as_str(), e.seq, &e.canonical, &e.hash);
                replayed = e.seq;
            }
            bar.inc(last.min(end).saturating_sub(after));
            after = last;
        }
        // vigil never shortens a tree, so a log that stops before its tree's size lost its last
        // events. The auditor reports those a checkpoint covers; this, the ones after them.
        let covered = replayed.max(signed);
        if size > covered {
            let missing = if covered + 1 == size {
                format!("event {size} is missing")
            } else {
                format!("events {}–{size} are missing", covered + 1)
            };
            auditor.damaged(
                Some(tenant.as_str()),
                replayed,
                format!(
                    "its Merkle tree has {size} leaves but its log stops at seq {replayed}: {missing}"
                ),
            );
        }
    }
    bar.finish_and_clear();
    Ok(auditor.finish())
}

fn print_report(
    report: &AuditReport,
    elapsed: std::time::Duration,
    format: VerifyFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let rate = report.events as f64 / elapsed.as_secs_f64().max(1e-9);
    match format {
        VerifyFormat::Text => {
            for t in &report.tenants {
                writeln!(
                    out,
                    "tenant {}: {} events, {} checkpoints checked, verified up to {}, root {}",
                    t.tenant,
                    t.events,
                    t.checkpoints,
                    t.last_verified_size,
                    hex::encode(t.root)
                )?;
            }
            for t in report
                .tenants
                .iter()
                .filter(|t| t.events > t.last_verified_size)
            {
                writeln!(
                    out,
                    "note: tenant {}: events {}–{} are after the newest checkpoint that matched: no signature covers them yet",
                    t.tenant,
                    t.last_verified_size + 1,
                    t.events
                )?;
            }
            for f in &report.findings {
                writeln!(out, "FAIL {f}")?;
            }
            writeln!(
                out,
                "{} of {}, {} checked in {:.2?} ({:.0} events/s): {}",
                counted(report.events, "event", "events"),
                counted(report.tenants.len() as u64, "tenant", "tenants"),
                counted(report.checkpoints_checked, "checkpoint", "checkpoints"),
                elapsed,
                rate,
                if report.is_clean() {
                    "ok".to_owned()
                } else {
                    format!("{} problem(s) found", report.findings.len())
                }
            )?;
        }
        VerifyFormat::Json => {
            let doc = serde_json::json!({
                "ok": report.is_clean(),
                "events": report.events,
                "checkpoints_checked": report.checkpoints_checked,
                "seconds": elapsed.as_secs_f64(),
                "tenants": report.tenants.iter().map(|t| serde_json::json!({
                    "tenant": t.tenant, "events": t.events, "checkpoints": t.checkpoints,
                    "last_verified_size": t.last_verified_size, "root_hash": hex::encode(t.root),
                    "uncovered": (t.events > t.last_verified_size).then(|| [t.last_verified_size + 1, t.events]),
                })).collect::<Vec<_>>(),
                "findings": report.findings.iter().map(|f| serde_json::json!({
                    "tenant": f.tenant, "seq": f.seq,
                    "range": f.range.as_ref().map(|r| [*r.start(), *r.end()]),
                    "message": f.message,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{doc}")?;
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        let first = report
            .findings
            .first()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        Err(failed(format!(
            "the log failed verification: {} problem(s); the first: {first}",
            report.findings.len()
        )))
    }
}

/// `n` and the noun in the number it takes: "1 tenant", "2 tenants".
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
