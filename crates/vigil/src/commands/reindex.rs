//! `vigil reindex`: rebuild the index files of a stopped server's data directory from its log.
//! Works offline, on the directory alone.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Data directory of a stopped server.
    #[arg(
        long,
        env = "VIGIL_DATA_DIR",
        default_value = crate::config::DEFAULT_DATA_DIR,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
}

pub async fn run(args: ReindexArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    let report = tokio::task::spawn_blocking(move || vigil_store_embedded::reindex(&dir))
        .await
        .context("reindexing")?
        .with_context(|| format!("reindexing {}", args.data_dir.display()))?;
    writeln!(out, "{report}")?;
    Ok(())
}
