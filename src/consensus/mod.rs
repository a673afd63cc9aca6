//! TEMPORARY stand-in with the consensus API (replaced by the openraft module).
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

use crate::registry::{Command, Outcome, Registry};

pub struct ConsensusConfig {
    pub node_id: u64,
    pub data_dir: std::path::PathBuf,
    pub advertise: String,
}
pub struct Applied {
    pub log_index: u64,
    pub outcome: Outcome,
}
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("x")]
    X,
}
#[derive(Clone)]
pub struct Consensus {
    registry: Arc<RwLock<Registry>>,
    applied: mpsc::UnboundedSender<Applied>,
    index: Arc<tokio::sync::Mutex<u64>>,
    id: u64,
}
impl Consensus {
    pub async fn start(
        cfg: ConsensusConfig,
        applied: mpsc::UnboundedSender<Applied>,
    ) -> Result<Self, ConsensusError> {
        Ok(Self {
            registry: Default::default(),
            applied,
            index: Default::default(),
            id: cfg.node_id,
        })
    }
    pub async fn write(&self, cmd: Command) -> Result<Outcome, ConsensusError> {
        let mut index = self.index.lock().await;
        *index += 1;
        let outcome = self.registry.write().unwrap().apply(&cmd);
        let _ = self.applied.send(Applied {
            log_index: *index,
            outcome: outcome.clone(),
        });
        Ok(outcome)
    }
    pub fn registry(&self) -> Arc<RwLock<Registry>> {
        self.registry.clone()
    }
    pub fn is_leader(&self) -> bool {
        true
    }
    pub fn node_id(&self) -> u64 {
        self.id
    }
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        Ok(())
    }
}
