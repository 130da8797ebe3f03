//! The options of every command that talks to NATS JetStream, and the connection they make.
//!
//! `--nats` is optional here so that each command decides what it means: `vigil generate`
//! needs it or `--http`, `vigil last` reads over NATS when it is given and over HTTP when not.
//! The URL may carry a password, so `--help` never shows the value of `VIGIL_NATS`.

use std::path::PathBuf;
use std::time::Duration;

use vigil_bus::{Bus, BusConfig, TlsFiles};

use crate::args::parse_duration;
use crate::error::CliError;
use crate::layered::options;

options! {
    /// Where NATS is, and how to talk to it. In `vigil serve` these are also `vigil.toml` keys.
    pub struct NatsArgs, file NatsFile {
        /// NATS with JetStream: `nats://user:password@host:4222`, or several servers separated
        /// by commas. Prefer the environment variable: command-line arguments are visible to
        /// other users of the machine.
        #[arg(long, env = "VIGIL_NATS", hide_env_values = true, value_name = "URL")]
        pub nats: Option<String>,
        /// Prefix of every NATS subject and suffix of every stream name, for several
        /// deployments (or tests) on one NATS server; the same on every node of a deployment.
        #[arg(long, env = "VIGIL_NATS_NAMESPACE", value_name = "NS")]
        pub nats_namespace: Option<String>,
        /// Prefix of this process's reply subjects [default: `_INBOX`]. The least-privilege
        /// server configuration (deploy/nats/) lets each user read only its own,
        /// `_INBOX.<user>`.
        #[arg(long, env = "VIGIL_NATS_INBOX_PREFIX", value_name = "PREFIX")]
        pub nats_inbox_prefix: Option<String>,
        /// CA certificates (PEM) to trust for the NATS server's certificate; turns TLS on.
        #[arg(long, env = "VIGIL_NATS_TLS_CA", value_name = "FILE")]
        pub nats_tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for servers that verify clients; needs --nats-tls-key.
        #[arg(
            long,
            env = "VIGIL_NATS_TLS_CERT",
            value_name = "FILE",
            requires = "nats_tls_key"
        )]
        pub nats_tls_cert: Option<PathBuf>,
        /// Private key (PEM) of the client certificate; needs --nats-tls-cert.
        #[arg(
            long,
            env = "VIGIL_NATS_TLS_KEY",
            value_name = "FILE",
            requires = "nats_tls_cert"
        )]
        pub nats_tls_key: Option<PathBuf>,
        /// How long to wait for the connection, for JetStream's acknowledgement of a publish,
        /// and for the answer to a request.
        #[arg(long, env = "VIGIL_NATS_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
        pub nats_timeout: Duration,
    }
}

impl NatsArgs {
    /// The bus configuration for the server(s) at `url`, under `connection_name` in the
    /// server's monitoring.
    pub fn bus_config(&self, url: &str, connection_name: &str) -> BusConfig {
        BusConfig {
            namespace: self.nats_namespace.clone(),
            inbox_prefix: self.nats_inbox_prefix.clone(),
            tls: TlsFiles {
                ca: self.nats_tls_ca.clone(),
                cert: self.nats_tls_cert.clone(),
                key: self.nats_tls_key.clone(),
            },
            connection_name: connection_name.to_owned(),
            request_timeout: self.nats_timeout,
            ..BusConfig::new(url)
        }
    }

    /// Connects to the server(s) at `url`. A failure keeps the bus's code (`bus_unavailable`,
    /// `bus_config`) for the error line.
    pub async fn connect(&self, url: &str, connection_name: &str) -> anyhow::Result<Bus> {
        Bus::connect(self.bus_config(url, connection_name))
            .await
            .map_err(|e| CliError::new(e.code(), e.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> Result<NatsArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|c| c.nats)
    }

    #[test]
    fn every_option_reaches_the_bus_configuration() {
        let args = parse(&[
            "--nats",
            "nats://generator:pw@n1:4222,nats://n2:4222",
            "--nats-namespace",
            "staging",
            "--nats-inbox-prefix",
            "_INBOX.generator",
            "--nats-tls-ca",
            "/etc/nats/ca.pem",
            "--nats-tls-cert",
            "/etc/nats/client.pem",
            "--nats-tls-key",
            "/etc/nats/client.key",
            "--nats-timeout",
            "1500ms",
        ])
        .unwrap();
        let url = args.nats.clone().unwrap();
        let config = args.bus_config(&url, "vigil-generate");
        assert_eq!(config.url, "nats://generator:pw@n1:4222,nats://n2:4222");
        assert_eq!(config.namespace.as_deref(), Some("staging"));
        assert_eq!(config.inbox_prefix.as_deref(), Some("_INBOX.generator"));
        assert_eq!(
            config.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/nats/ca.pem"))
        );
        assert_eq!(
            config.tls.cert.as_deref(),
            Some(std::path::Path::new("/etc/nats/client.pem"))
        );
        assert_eq!(
            config.tls.key.as_deref(),
            Some(std::path::Path::new("/etc/nats/client.key"))
        );
        assert_eq!(config.connection_name, "vigil-generate");
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn defaults_leave_the_design_names_and_plain_connections() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.nats, None,
            "each command decides whether --nats is needed"
        );
        let config = args.bus_config("nats://127.0.0.1:4222", "vigil-last");
        assert_eq!(config.namespace, None);
        assert_eq!(config.inbox_prefix, None);
        assert!(config.tls.ca.is_none() && config.tls.cert.is_none() && config.tls.key.is_none());
        assert_eq!(config.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(parse(&["--nats-timeout", "soon"]).is_err());
        assert!(
            parse(&["--nats-tls-cert", "c.pem"]).is_err(),
            "a certificate without its key"
        );
        assert!(parse(&["--nats-tls-key", "c.key"]).is_err());
    }

    #[test]
    fn help_never_shows_the_url() {
        use clap::CommandFactory;
        let help = Command::command().render_long_help().to_string();
        for var in [
            "VIGIL_NATS",
            "VIGIL_NATS_NAMESPACE",
            "VIGIL_NATS_INBOX_PREFIX",
            "VIGIL_NATS_TLS_CA",
            "VIGIL_NATS_TLS_CERT",
            "VIGIL_NATS_TLS_KEY",
            "VIGIL_NATS_TIMEOUT",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
        // `hide_env_values` shows `[env: VIGIL_NATS]` without `=<value>`: even with the
        // variable set, the password cannot appear.
        assert!(help.contains("[env: VIGIL_NATS]"), "{help}");
    }
}
