//! The security events `vigil generate` makes: a mix of scenarios as a small organisation's
//! identity provider, firewall, endpoint protection, IAM and billing would report them.
//!
//! The stream is a sequence of *episodes* drawn by weight. Most episodes are one event (a login,
//! a blocked connection, a charge); a failure burst is several `login.failed` from one address
//! within moments, sometimes ending in a success for one of the targeted accounts — the
//! likely compromise an analyst wants to find. Severities follow what each scenario means, so
//! the mix is mostly 0–3 with a thin tail of 8–10.
//!
//! Who and what an event names come from fixed pools (400 employees, a few service accounts,
//! 240 workstations, a dozen servers, 600 customers, 48 hostile addresses, 16 malware samples),
//! so queries by actor, address, host or hash find repeats. The pools are the same for every
//! seed; the seed decides the sequence of episodes and what they draw. All external addresses
//! are in the documentation ranges of RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)
//! and internal ones in 10.0.0.0/8: generated data never names a real host.

use std::collections::VecDeque;

use chrono::{SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

/// Makes events one at a time. With a seed, event `n` is the same on every run (its id is
/// `gen-s<SEED>-<n>`), whatever the rate or batch size it is sent with.
#[derive(Debug)]
pub struct EventGenerator {
    rng: StdRng,
    /// Every id is `<prefix>-<n>`: from the seed, or random and unique to the run.
    id_prefix: String,
    /// Unseeded events carry their generation time. Seeded events carry none (the server
    /// stamps its receipt time), so that their content, and so their idempotency digest,
    /// depends on the seed alone and a re-run is recognised as duplicates.
    stamp_time: bool,
    /// Number of the next event.
    next: u64,
    /// The rest of the current episode.
    pending: VecDeque<Value>,
}

impl EventGenerator {
    /// A reproducible stream.
    pub fn seeded(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            id_prefix: format!("gen-s{seed}"),
            stamp_time: false,
            next: 0,
            pending: VecDeque::new(),
        }
    }

    /// A stream unique to this run: random content, ids under a random 64-bit run id.
    pub fn unseeded() -> Self {
        let mut rng = StdRng::from_os_rng();
        let run = rng.next_u64();
        Self {
            rng,
            id_prefix: format!("gen-{run:016x}"),
            stamp_time: true,
            next: 0,
            pending: VecDeque::new(),
        }
    }

    /// The next event of the stream, with its `id` (and, unseeded, `time` = now).
    pub fn next_event(&mut self) -> Value {
        let mut event = loop {
            if let Some(event) = self.pending.pop_front() {
                break event;
            }
            self.pending.extend(episode(&mut self.rng));
        };
        if let Value::Object(fields) = &mut event {
            fields.insert(
                "id".to_owned(),
                Value::String(format!("{}-{}", self.id_prefix, self.next)),
            );
            if self.stamp_time {
                fields.insert(
                    "time".to_owned(),
                    Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
                );
            }
        }
        self.next += 1;
        event
    }
}

/// What an episode is about, with its weight in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    LoginSuccess,
    /// A user mistyping a password once, from their usual address.
    LoginTypo,
    FailureBurst,
    FirewallBlock,
    BillingCharge,
    PasswordChanged,
    AccountCreated,
    AccountDeactivated,
    PrivilegeGranted,
    MalwareDetected,
}

const SCENARIOS: [(Scenario, u32); 10] = [
    (Scenario::LoginSuccess, 38),
    (Scenario::LoginTypo, 8),
    (Scenario::FailureBurst, 3),
    (Scenario::FirewallBlock, 22),
    (Scenario::BillingCharge, 12),
    (Scenario::PasswordChanged, 5),
    (Scenario::AccountCreated, 3),
    (Scenario::AccountDeactivated, 2),
    (Scenario::PrivilegeGranted, 4),
    (Scenario::MalwareDetected, 1),
];

/// The events of one episode, drawn by weight.
fn episode(rng: &mut StdRng) -> Vec<Value> {
    match *weighted(rng, &SCENARIOS) {
        Scenario::LoginSuccess => vec![login_success(rng)],
        Scenario::LoginTypo => vec![login_typo(rng)],
        Scenario::FailureBurst => failure_burst(rng),
        Scenario::FirewallBlock => vec![firewall_block(rng)],
        Scenario::BillingCharge => vec![billing_charge(rng)],
        Scenario::PasswordChanged => vec![password_changed(rng)],
        Scenario::AccountCreated => vec![account_created(rng)],
        Scenario::AccountDeactivated => vec![account_deactivated(rng)],
        Scenario::PrivilegeGranted => vec![privilege_granted(rng)],
        Scenario::MalwareDetected => vec![malware_detected(rng)],
    }
}

/// One of `items`, each as likely as its weight.
fn weighted<'a, T>(rng: &mut impl Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (item, weight) in items {
        if pick < *weight {
            return item;
        }
        pick -= weight;
    }
    unreachable!("a draw below the total weight falls on an item")
}

/// One of `items` (never empty: every pool below is a non-empty constant).
fn one<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("a non-empty pool")
}

// ---------------------------------------------------------------------------------------------
// Pools

const FIRST_NAMES: [&str; 20] = [
    "anna", "ben", "carla", "david", "elena", "farid", "grace", "hugo", "ines", "jonas", "kira",
    "liam", "maya", "noah", "olga", "pavel", "rosa", "sami", "tara", "yusuf",
];
const LAST_NAMES: [&str; 20] = [
    "berg", "costa", "dubois", "eriksen", "fischer", "garcia", "haddad", "ito", "jansen",
    "kowalski", "lind", "moreau", "nowak", "okafor", "petrov", "quinn", "rossi", "schmidt",
    "tanaka", "weber",
];
/// Employees: `first.last`, one per pair of names.
pub const USERS: usize = FIRST_NAMES.len() * LAST_NAMES.len();
/// The employees who administer accounts and roles.
const ADMINS: [usize; 8] = [3, 41, 77, 120, 188, 256, 301, 350];
const SERVICE_ACCOUNTS: [&str; 6] = [
    "svc-backup",
    "svc-ci",
    "svc-deploy",
    "svc-etl",
    "svc-monitoring",
    "svc-billing-sync",
];
/// Account names that password sprayers try and that do not exist here.
const GUESSED_ACCOUNTS: [&str; 8] = [
    "admin",
    "root",
    "test",
    "administrator",
    "guest",
    "oracle",
    "postgres",
    "support",
];
/// Applications people sign in to.
const APPS: [&str; 8] = [
    "mail",
    "crm",
    "git",
    "wiki",
    "erp",
    "hr-portal",
    "grafana",
    "jira",
];
const USER_AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
    "MicrosoftOffice/16.0 (Windows NT 10.0)",
];
const ATTACK_TOOLS: [&str; 4] = [
    "python-requests/2.31.0",
    "Hydra v9.5",
    "curl/8.5.0",
    "Go-http-client/1.1",
];
/// Hostile addresses (203.0.113.1 – 203.0.113.48).
pub const ATTACKER_IPS: usize = 48;
/// Workstations `ws-0000` … `ws-0239`.
pub const WORKSTATIONS: usize = 240;
/// Servers with their internal addresses.
const SERVERS: [(&str, &str); 12] = [
    ("web-01", "10.10.1.11"),
    ("web-02", "10.10.1.12"),
    ("api-01", "10.10.1.21"),
    ("api-02", "10.10.1.22"),
    ("db-01", "10.10.2.11"),
    ("db-02", "10.10.2.12"),
    ("cache-01", "10.10.2.21"),
    ("search-01", "10.10.2.31"),
    ("mail-01", "10.10.3.11"),
    ("vpn-01", "10.10.3.21"),
    ("files-01", "10.10.3.31"),
    ("build-01", "10.10.4.11"),
];
/// Paying customers `cust-1000` … `cust-1599`.
pub const CUSTOMERS: usize = 600;
/// Plans with their monthly price per seat.
const PLANS: [(&str, f64); 3] = [("pro", 29.0), ("team", 12.5), ("enterprise", 45.0)];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
/// Roles that can be granted, with how critical a grant is.
const ROLES: [(&str, u8); 6] = [
    ("db-reader", 6),
    ("billing-admin", 6),
    ("deploy", 7),
    ("db-owner", 7),
    ("org-admin", 8),
    ("root", 8),
];
/// Known malware: signature, family, file name, severity.
const MALWARE: [(&str, &str, &str, u8); 16] = [
    (
        "Trojan.GenericKD.46542",
        "trojan",
        "invoice_0423.pdf.exe",
        9,
    ),
    ("Win32.Emotet.AX", "trojan", "scan_2024.doc", 9),
    ("Ransom.LockBit.B", "ransomware", "svchost_update.exe", 10),
    ("Ransom.BlackCat.A", "ransomware", "vmtools.exe", 10),
    (
        "Backdoor.CobaltStrike.Beacon",
        "backdoor",
        "rundll_helper.dll",
        10,
    ),
    ("Backdoor.AsyncRAT", "backdoor", "discord_setup.exe", 9),
    ("Stealer.RedLine.C", "infostealer", "chrome_patch.exe", 9),
    ("Stealer.Raccoon.B", "infostealer", "crack_photoshop.exe", 9),
    ("Worm.Conficker.B", "worm", "autorun.inf", 8),
    ("PUA.CoinMiner.XMRig", "coinminer", "xmrig", 8),
    ("PUA.Adware.BrowseFox", "adware", "browsefox_setup.exe", 8),
    ("Exploit.CVE-2017-11882", "exploit", "quote_request.rtf", 9),
    ("Exploit.Log4Shell.A", "exploit", "log4j-core-2.14.1.jar", 9),
    ("HackTool.Mimikatz", "hacktool", "mimi.exe", 10),
    ("Trojan.Qakbot.D", "trojan", "report_q3.xlsm", 9),
    ("Dropper.Agent.VB", "dropper", "update_flash.vbs", 8),
];
/// Ports scanned from outside, with how often.
const INBOUND_PORTS: [(u16, u32); 9] = [
    (22, 30),
    (3389, 20),
    (445, 10),
    (23, 8),
    (3306, 8),
    (5432, 6),
    (6379, 6),
    (9200, 4),
    (8080, 8),
];
/// Ports of blocked outbound connections (command and control, exfiltration).
const OUTBOUND_PORTS: [(u16, &str); 5] = [
    (4444, "tcp"),
    (8443, "tcp"),
    (6667, "tcp"),
    (53, "udp"),
    (1337, "tcp"),
];

/// Employee number `n` (below [`USERS`]).
fn user(n: usize) -> String {
    format!(
        "{}.{}",
        FIRST_NAMES[n % FIRST_NAMES.len()],
        LAST_NAMES[(n / FIRST_NAMES.len()) % LAST_NAMES.len()]
    )
}

/// The address employee `n` usually works from: two in three behind the office gateways,
/// the others from home.
fn home_ip(n: usize) -> String {
    if n.is_multiple_of(3) {
        format!("198.51.100.{}", 64 + n % 180)
    } else {
        format!("198.51.100.{}", 10 + n % 8)
    }
}

/// Where employee `n` signs in from this time: usually their own address, sometimes a hotel
/// or phone network.
fn user_ip(rng: &mut impl Rng, n: usize) -> String {
    if rng.random_bool(0.05) {
        format!("192.0.2.{}", rng.random_range(1..=100))
    } else {
        home_ip(n)
    }
}

fn attacker_ip(rng: &mut impl Rng) -> String {
    format!("203.0.113.{}", rng.random_range(1..=ATTACKER_IPS))
}

fn service_ip(n: usize) -> String {
    format!("10.10.9.{}", 10 + n)
}

/// Workstation `n` (below [`WORKSTATIONS`]) and its address; it belongs to employee `n`.
fn workstation(n: usize) -> (String, String) {
    (
        format!("ws-{n:04}"),
        format!("10.20.{}.{}", n / 120, 10 + n % 120),
    )
}

/// The SHA-256 of malware sample `n`: fixed for the pool, whatever the seed.
fn sample_hash(n: usize) -> String {
    let mut bytes = [0u8; 32];
    StdRng::seed_from_u64(0x6d61_6c77_6172_6500 + n as u64).fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_user(rng: &mut impl Rng) -> usize {
    rng.random_range(0..USERS)
}

fn random_admin(rng: &mut impl Rng) -> usize {
    *one(rng, &ADMINS)
}

/// A user actor signing in from `ip`.
fn user_actor(n: usize, ip: &str) -> Value {
    json!({"id": user(n), "type": "user", "ip": ip})
}

// ---------------------------------------------------------------------------------------------
// Scenarios

fn login_success(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.15) {
        let n = rng.random_range(0..SERVICE_ACCOUNTS.len());
        return json!({
            "type": "login.succeeded",
            "severity": 0,
            "actor": {"id": SERVICE_ACCOUNTS[n], "type": "service", "ip": service_ip(n)},
            "source": "sso",
            "action": "login",
            "outcome": "success",
            "resource": {"type": "application", "id": one(rng, &APPS)},
            "details": {"method": "client_credentials"},
        });
    }
    let n = random_user(rng);
    let new_device = rng.random_bool(0.1);
    json!({
        "type": "login.succeeded",
        "severity": u8::from(new_device),
        "actor": user_actor(n, &user_ip(rng, n)),
        "source": one(rng, &["sso", "sso", "sso", "vpn"]),
        "action": "login",
        "outcome": "success",
        "resource": {"type": "application", "id": one(rng, &APPS)},
        "details": {
            "method": one(rng, &["password+totp", "sso", "webauthn"]),
            "user_agent": one(rng, &USER_AGENTS),
            "new_device": new_device,
        },
    })
}

fn login_typo(rng: &mut StdRng) -> Value {
    let n = random_user(rng);
    json!({
        "type": "login.failed",
        "severity": 2,
        "actor": user_actor(n, &home_ip(n)),
        "source": "sso",
        "action": "login",
        "outcome": "failure",
        "resource": {"type": "application", "id": one(rng, &APPS)},
        "details": {
            "reason": "invalid_password",
            "attempt": 1,
            "user_agent": one(rng, &USER_AGENTS),
        },
    })
}

/// Several failed sign-ins from one hostile address within moments: against one account
/// (brute force) or a handful (password spraying, which also tries names that do not exist).
/// One burst in four ends with a success for a targeted account: a likely compromise.
fn failure_burst(rng: &mut StdRng) -> Vec<Value> {
    let ip = attacker_ip(rng);
    let tool = *one(rng, &ATTACK_TOOLS);
    let app = *one(rng, &APPS);
    // (account name, whether it exists here)
    let targets: Vec<(String, bool)> = if rng.random_bool(0.4) {
        let spread = rng.random_range(3..=8);
        (0..spread)
            .map(|_| {
                if rng.random_bool(0.3) {
                    ((*one(rng, &GUESSED_ACCOUNTS)).to_owned(), false)
                } else {
                    (user(random_user(rng)), true)
                }
            })
            .collect()
    } else {
        vec![(user(random_user(rng)), true)]
    };
    let attempts = if targets.len() > 1 {
        targets.len() * rng.random_range(1..=2)
    } else {
        rng.random_range(4..=12)
    };
    let mut events: Vec<Value> = (0..attempts)
        .map(|k| {
            let (account, exists) = &targets[k % targets.len()];
            json!({
                "type": "login.failed",
                "severity": 3 + u8::from(k >= 4) + u8::from(k >= 9),
                "actor": {"id": account, "type": "user", "ip": ip},
                "source": "sso",
                "action": "login",
                "outcome": "failure",
                "resource": {"type": "application", "id": app},
                "details": {
                    "reason": if *exists { "invalid_password" } else { "unknown_user" },
                    "attempt": k + 1,
                    "user_agent": tool,
                },
            })
        })
        .collect();
    let real: Vec<&String> = targets
        .iter()
        .filter(|(_, exists)| *exists)
        .map(|(account, _)| account)
        .collect();
    if let Some(account) = real.choose(rng)
        && rng.random_bool(0.25)
    {
        events.push(json!({
            "type": "login.succeeded",
            "severity": if attempts >= 8 || targets.len() > 1 { 9 } else { 8 },
            "actor": {"id": account, "type": "user", "ip": ip},
            "source": "sso",
            "action": "login",
            "outcome": "success",
            "resource": {"type": "application", "id": app},
            "details": {
                "method": "password",
                "user_agent": tool,
                "after_failures": attempts,
                "suspected_compromise": true,
            },
        }));
    }
    events
}

fn firewall_block(rng: &mut StdRng) -> Value {
    let firewall = *one(rng, &["fw-edge-01", "fw-edge-02", "fw-core-01"]);
    if rng.random_bool(0.75) {
        // Inbound: scans and probes from outside against the servers.
        let src = attacker_ip(rng);
        let (server, dst) = *one(rng, &SERVERS);
        let port = *weighted(rng, &INBOUND_PORTS);
        let severity = *weighted(rng, &[(1u8, 55), (2, 30), (3, 12), (4, 3)]);
        json!({
            "type": "firewall.blocked",
            "severity": severity,
            "actor": {"id": src, "type": "external", "ip": src},
            "source": firewall,
            "action": "block",
            "outcome": "success",
            "resource": {"type": "host", "id": server},
            "details": {
                "direction": "inbound",
                "src_ip": src,
                "src_port": rng.random_range(1024..=65535u16),
                "dst_ip": dst,
                "port": port,
                "protocol": "tcp",
                "rule": if port == 22 { "ssh-allowlist" } else { "deny-inbound-default" },
                "packets": rng.random_range(1..=40u32),
            },
        })
    } else {
        // Outbound: a workstation reaching a known-bad address.
        let n = rng.random_range(0..WORKSTATIONS);
        let (host, src) = workstation(n);
        let dst = attacker_ip(rng);
        let (port, protocol) = *one(rng, &OUTBOUND_PORTS);
        let severity = *weighted(rng, &[(3u8, 50), (4, 30), (5, 15), (6, 5)]);
        json!({
            "type": "firewall.blocked",
            "severity": severity,
            "actor": {"id": host, "type": "host", "ip": src},
            "source": firewall,
            "action": "block",
            "outcome": "success",
            "resource": {"type": "ip", "id": dst},
            "details": {
                "direction": "outbound",
                "src_ip": src,
                "src_port": rng.random_range(49152..=65535u16),
                "dst_ip": dst,
                "port": port,
                "protocol": protocol,
                "rule": "egress-threat-intel",
                "packets": rng.random_range(1..=6u32),
            },
        })
    }
}

fn billing_charge(rng: &mut StdRng) -> Value {
    let n = rng.random_range(0..CUSTOMERS);
    let (plan, per_seat) = PLANS[n % PLANS.len()];
    let seats = 1 + (n * 7) % 40;
    let currency = CURRENCIES[n % CURRENCIES.len()];
    let declined = rng.random_bool(0.03);
    let amount = (per_seat * seats as f64 * 100.0).round() / 100.0;
    let mut event = json!({
        "type": "billing.charged",
        "severity": if declined { 3 } else { 0 },
        "actor": {"id": "svc-billing-sync", "type": "service", "ip": service_ip(5)},
        "source": "billing",
        "action": "charge",
        "outcome": if declined { "failure" } else { "success" },
        "resource": {"type": "customer", "id": format!("cust-{}", 1000 + n)},
        "details": {
            "amount": amount,
            "currency": currency,
            "plan": plan,
            "seats": seats,
            "invoice": format!("inv-{:08}", rng.random_range(0..100_000_000u32)),
            "payment_method": if n.is_multiple_of(5) { "sepa" } else { "card" },
        },
    });
    if declined {
        event["details"]["decline_reason"] = json!(*one(
            rng,
            &["card_declined", "insufficient_funds", "expired_card"]
        ));
    }
    event
}

fn password_changed(rng: &mut StdRng) -> Value {
    let n = random_user(rng);
    let (actor, method, severity) = if rng.random_bool(0.2) {
        let admin = random_admin(rng);
        (user_actor(admin, &home_ip(admin)), "admin_reset", 3)
    } else if rng.random_bool(0.2) {
        (user_actor(n, &user_ip(rng, n)), "forced_rotation", 1)
    } else {
        (user_actor(n, &user_ip(rng, n)), "self_service", 1)
    };
    json!({
        "type": "password.changed",
        "severity": severity,
        "actor": actor,
        "source": "sso",
        "action": "update",
        "outcome": "success",
        "resource": {"type": "account", "id": user(n)},
        "details": {"method": method},
    })
}

fn account_created(rng: &mut StdRng) -> Value {
    let n = random_user(rng);
    let admin = random_admin(rng);
    json!({
        "type": "account.created",
        "severity": 1,
        "actor": user_actor(admin, &home_ip(admin)),
        "source": "iam",
        "action": "create",
        "outcome": "success",
        "resource": {"type": "account", "id": user(n)},
        "details": {
            "email": format!("{}@example.com", user(n)),
            "department": one(rng, &["engineering", "sales", "finance", "support", "operations"]),
            "provisioning": one(rng, &["scim", "console"]),
        },
    })
}

fn account_deactivated(rng: &mut StdRng) -> Value {
    let n = random_user(rng);
    let admin = random_admin(rng);
    let (reason, severity) = *one(
        rng,
        &[
            ("offboarding", 3),
            ("offboarding", 3),
            ("inactivity", 3),
            ("security", 5),
        ],
    );
    json!({
        "type": "account.deactivated",
        "severity": severity,
        "actor": user_actor(admin, &home_ip(admin)),
        "source": "iam",
        "action": "deactivate",
        "outcome": "success",
        "resource": {"type": "account", "id": user(n)},
        "details": {"reason": reason, "sessions_revoked": rng.random_range(0..=4u8)},
    })
}

fn privilege_granted(rng: &mut StdRng) -> Value {
    let admin = random_admin(rng);
    let grantee = random_user(rng);
    let (role, severity) = *one(rng, &ROLES);
    let mut event = json!({
        "type": "privilege.granted",
        "severity": severity,
        "actor": user_actor(admin, &home_ip(admin)),
        "source": "iam",
        "action": "grant",
        "outcome": "success",
        "resource": {"type": "role", "id": role},
        "details": {
            "grantee": user(grantee),
            "role": role,
            "scope": one(rng, &["production", "staging", "billing", "organisation"]),
            "ticket": format!("CHG-{}", rng.random_range(1000..10_000u32)),
        },
    });
    // Two grants in three are temporary.
    if let Some(hours) = [Some(8), Some(24), None].choose(rng).copied().flatten() {
        event["details"]["expires_in_hours"] = Value::from(hours);
    }
    event
}

fn malware_detected(rng: &mut StdRng) -> Value {
    let sample = rng.random_range(0..MALWARE.len());
    let (signature, family, file, base_severity) = MALWARE[sample];
    // Mostly a workstation (and its owner's downloads), sometimes a server.
    let (host, ip, owner) = if rng.random_bool(0.85) {
        let n = rng.random_range(0..WORKSTATIONS);
        let (host, ip) = workstation(n);
        (host, ip, Some(user(n)))
    } else {
        let (host, ip) = *one(rng, &SERVERS);
        (host.to_owned(), ip.to_owned(), None)
    };
    let path = match &owner {
        Some(owner) => format!("C:\\Users\\{owner}\\Downloads\\{file}"),
        None => format!("/tmp/{file}"),
    };
    let quarantined = rng.random_bool(0.9);
    let hash = sample_hash(sample);
    let mut event = json!({
        "type": "malware.detected",
        "severity": if quarantined { base_severity } else { 10 },
        "actor": {"id": host, "type": "host", "ip": ip},
        "source": "edr",
        "action": "quarantine",
        "outcome": if quarantined { "success" } else { "failure" },
        "resource": {"type": "file", "id": hash},
        "details": {
            "host": host,
            "sha256": hash,
            "signature": signature,
            "family": family,
            "path": path,
            "engine": "edr-agent 7.4.2",
        },
    });
    if let Some(owner) = owner {
        event["details"]["user"] = Value::String(owner);
    }
    event
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn stream(generator: &mut EventGenerator, n: usize) -> Vec<Value> {
        (0..n).map(|_| generator.next_event()).collect()
    }

    fn text<'a>(event: &'a Value, path: &str) -> &'a str {
        path.split('.')
            .fold(event, |v, key| &v[key])
            .as_str()
            .unwrap_or_else(|| panic!("{path} is not a string in {event}"))
    }

    #[test]
    fn a_seed_fixes_every_event_and_its_id() {
        let a = stream(&mut EventGenerator::seeded(7), 2_000);
        let b = stream(&mut EventGenerator::seeded(7), 2_000);
        assert_eq!(a, b);
        assert_eq!(a[0]["id"], "gen-s7-0");
        assert_eq!(a[1_999]["id"], "gen-s7-1999");
        assert!(
            a.iter().all(|e| e.get("time").is_none()),
            "seeded events leave the time to the server, so a re-run has the same content"
        );

        let other = stream(&mut EventGenerator::seeded(8), 2_000);
        let differing = a
            .iter()
            .zip(&other)
            .filter(|(x, y)| x["type"] != y["type"] || x["actor"] != y["actor"])
            .count();
        assert!(differing > 1_000, "only {differing} of 2000 events differ");
    }

    #[test]
    fn unseeded_runs_have_their_own_ids_and_the_current_time() {
        let before = Utc::now() - chrono::Duration::seconds(1);
        let a = stream(&mut EventGenerator::unseeded(), 100);
        let b = stream(&mut EventGenerator::unseeded(), 100);
        let ids: BTreeSet<&str> = a.iter().chain(&b).map(|e| text(e, "id")).collect();
        assert_eq!(ids.len(), 200);
        for event in &a {
            let time = chrono::DateTime::parse_from_rfc3339(text(event, "time")).unwrap();
            assert!(time >= before && time <= Utc::now(), "{time}");
        }
    }

    #[test]
    fn every_event_is_valid_and_uses_the_envelope() {
        let limits = vigil_event::Limits::default();
        for event in stream(&mut EventGenerator::seeded(1), 5_000)
            .into_iter()
            .chain(stream(&mut EventGenerator::unseeded(), 500))
        {
            for field in ["type", "actor", "source", "action", "outcome", "resource"] {
                assert!(event.get(field).is_some(), "{field} missing in {event}");
            }
            assert!(event["details"].is_object(), "{event}");
            for path in [
                "actor.id",
                "actor.type",
                "actor.ip",
                "resource.type",
                "resource.id",
            ] {
                text(&event, path);
            }
            if let Err(errors) = vigil_event::normalize(event.clone(), &limits) {
                panic!("{event} is refused: {errors:?}");
            }
        }
    }

    #[test]
    fn severity_is_mostly_low_with_a_thin_high_tail() {
        let events = stream(&mut EventGenerator::seeded(3), 20_000);
        let mut by_level = BTreeMap::<u64, usize>::new();
        for event in &events {
            *by_level
                .entry(event["severity"].as_u64().unwrap())
                .or_default() += 1;
        }
        let share = |range: std::ops::RangeInclusive<u64>| {
            by_level
                .iter()
                .filter(|(level, _)| range.contains(level))
                .map(|(_, n)| *n)
                .sum::<usize>() as f64
                / events.len() as f64
        };
        assert!(by_level.keys().all(|&level| level <= 10), "{by_level:?}");
        assert!(share(0..=3) > 0.7, "{by_level:?}");
        assert!(share(4..=7) < 0.25, "{by_level:?}");
        assert!(
            share(8..=10) > 0.005 && share(8..=10) < 0.05,
            "{by_level:?}"
        );
        assert!(share(8..=10) < share(4..=7), "{by_level:?}");
        let most_common = by_level
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(level, _)| *level);
        assert_eq!(most_common, Some(0), "{by_level:?}");
        assert!(by_level.contains_key(&10), "{by_level:?}");
    }

    #[test]
    fn every_scenario_appears_in_a_long_run() {
        let events = stream(&mut EventGenerator::seeded(11), 20_000);
        let types: BTreeSet<&str> = events.iter().map(|e| text(e, "type")).collect();
        assert_eq!(
            types,
            BTreeSet::from([
                "account.created",
                "account.deactivated",
                "billing.charged",
                "firewall.blocked",
                "login.failed",
                "login.succeeded",
                "malware.detected",
                "password.changed",
                "privilege.granted",
            ])
        );
        let compromises = events
            .iter()
            .filter(|e| e["details"]["suspected_compromise"] == true)
            .count();
        assert!(compromises > 0);
    }

    #[test]
    fn a_failure_burst_comes_from_one_hostile_address() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut ended_in_success = 0;
        let mut sprays = 0;
        for _ in 0..400 {
            let burst = failure_burst(&mut rng);
            let ips: BTreeSet<&str> = burst.iter().map(|e| text(e, "actor.ip")).collect();
            assert_eq!(ips.len(), 1, "{burst:?}");
            assert!(ips.first().unwrap().starts_with("203.0.113."), "{ips:?}");
            let (failures, rest) = burst.split_at(
                burst
                    .iter()
                    .take_while(|e| e["type"] == "login.failed")
                    .count(),
            );
            assert!(failures.len() >= 3, "{burst:?}");
            let accounts: BTreeSet<&str> = failures.iter().map(|e| text(e, "actor.id")).collect();
            sprays += usize::from(accounts.len() > 1);
            match rest {
                [] => {}
                [success] => {
                    ended_in_success += 1;
                    assert_eq!(success["type"], "login.succeeded");
                    assert!(success["severity"].as_u64().unwrap() >= 8, "{success}");
                    assert!(accounts.contains(text(success, "actor.id")), "{success}");
                    assert_eq!(success["details"]["after_failures"], failures.len());
                }
                more => panic!("a burst ends with at most one success: {more:?}"),
            }
        }
        assert!(
            (40..=160).contains(&ended_in_success),
            "{ended_in_success} of 400"
        );
        assert!((80..=240).contains(&sprays), "{sprays} of 400");
    }

    #[test]
    fn names_addresses_and_hashes_come_from_bounded_pools_and_repeat() {
        let events = stream(&mut EventGenerator::seeded(9), 30_000);
        let distinct = |path: &str| -> BTreeSet<String> {
            events
                .iter()
                .filter_map(|e| {
                    path.split('.')
                        .try_fold(e, |v, key| v.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        };
        let actors = distinct("actor.id");
        let pool_size = USERS
            + SERVICE_ACCOUNTS.len()
            + GUESSED_ACCOUNTS.len()
            + WORKSTATIONS
            + SERVERS.len()
            + ATTACKER_IPS;
        assert!(actors.len() <= pool_size, "{} actors", actors.len());
        let ips = distinct("actor.ip");
        // Office gateways, homes, travel, hostile, service and internal host addresses.
        assert!(
            ips.len()
                <= 8 + 180
                    + 100
                    + ATTACKER_IPS
                    + SERVICE_ACCOUNTS.len()
                    + WORKSTATIONS
                    + SERVERS.len(),
            "{} addresses",
            ips.len()
        );
        assert!(distinct("details.host").len() <= WORKSTATIONS + SERVERS.len());
        assert!(distinct("details.sha256").len() <= MALWARE.len());
        let customers = events
            .iter()
            .filter(|e| e["type"] == "billing.charged")
            .map(|e| text(e, "resource.id"))
            .collect::<BTreeSet<_>>();
        assert!(customers.len() <= CUSTOMERS);
        assert!(
            actors.len() * 20 < events.len(),
            "actors repeat: {} distinct in {}",
            actors.len(),
            events.len()
        );
        // The pools do not depend on the seed: another seed names the same people.
        let again: BTreeSet<String> = stream(&mut EventGenerator::seeded(10), 30_000)
            .iter()
            .filter_map(|e| e["actor"]["id"].as_str().map(str::to_owned))
            .collect();
        let shared = actors.intersection(&again).count();
        assert!(
            shared * 10 > actors.len() * 9,
            "{shared} of {} shared",
            actors.len()
        );
    }

    #[test]
    fn scenario_events_carry_their_specific_details() {
        let events = stream(&mut EventGenerator::seeded(21), 10_000);
        let of = |t: &'static str| events.iter().filter(move |e| e["type"] == t);
        for e in of("firewall.blocked") {
            let d = &e["details"];
            for key in ["src_ip", "dst_ip", "protocol", "direction", "rule"] {
                assert!(d[key].is_string(), "{key}: {e}");
            }
            assert!(d["port"].is_u64(), "{e}");
        }
        for e in of("malware.detected") {
            let hash = text(e, "details.sha256");
            assert_eq!(hash.len(), 64);
            assert!(
                hash.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(e["details"]["signature"].is_string() && e["details"]["host"].is_string());
            assert!((8..=10).contains(&e["severity"].as_u64().unwrap()), "{e}");
        }
        for e in of("privilege.granted") {
            assert!((6..=8).contains(&e["severity"].as_u64().unwrap()), "{e}");
            assert!(e["details"]["grantee"].is_string());
        }
        for e in of("billing.charged") {
            let d = &e["details"];
            assert!(d["amount"].as_f64().unwrap() > 0.0, "{e}");
            assert!(CURRENCIES.contains(&text(e, "details.currency")));
            assert!(d["plan"].is_string());
        }
        assert!(of("account.deactivated").count() > 0 && of("password.changed").count() > 0);
    }
}
