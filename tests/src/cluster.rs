//! A private PostgreSQL cluster a test can stop and start (a database outage), removed when
//! the test ends, however it ends.

use jet::pg::{Access, Cluster, Durability};
use std::path::PathBuf;

/// A private cluster with trust access, throwaway durability.
pub struct OwnCluster {
    pub cluster: Cluster,
    dir: PathBuf,
}

impl OwnCluster {
    /// Prepares and starts a cluster in a fresh temporary directory.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("jet-chaos-{}", uuid::Uuid::new_v4().simple()));
        let mut cluster = Cluster::prepare(&dir, Durability::Throwaway, Access::Trust, None)
            .expect("prepare a private cluster");
        cluster.start().expect("start the private cluster");
        Self { cluster, dir }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
