//! The tokio shell around Synod's pure cores.
#![deny(missing_docs)]

pub mod config;
pub use config::NodeConfig;

/// Why a replica stopped.
#[derive(Debug)]
pub struct RuntimeError(pub String);

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuntimeError {}

/// Runs one replica until `shutdown` resolves (then stops gracefully:
/// stops taking proposals, makes the WAL durable, closes connections).
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RuntimeError> {
    cfg.validate().map_err(|e| RuntimeError(e.to_string()))?;
    shutdown.await;
    Err(RuntimeError("the replica loop is not written yet".into()))
}
