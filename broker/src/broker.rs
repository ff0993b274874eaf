//! Shared broker state handed to every handler: config, identity, the topic registry and the
//! group coordinator.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::group::driver::GroupDriver;
use crate::metrics::Metrics;
use crate::processor_status::PipelineStatuses;
use crate::producer_ids::ProducerIds;
use crate::topics::{replace_synced, TopicError, TopicRegistry};

/// Identity kept in `<data_dir>/meta.toml` so the cluster id is stable across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    cluster_id: String,
    node_id: i32,
}

pub struct Broker {
    pub config: Config,
    pub cluster_id: String,
    pub topics: Arc<TopicRegistry>,
    pub producer_ids: ProducerIds,
    /// The consumer-group coordinator; its committed offsets live in `<data_dir>/groups/`.
    pub groups: Arc<GroupDriver>,
    /// Prometheus series recorded as the broker runs (see [`crate::metrics`]).
    pub metrics: Metrics,
    /// What the embedded pipelines are doing (observation only).
    pub pipelines: PipelineStatuses,
    /// Reaches the live state of the pipelines running here (gRPC `Windows.Query`).
    pub queries: crate::processing::PipelineQueries,
    /// Offsets retention must keep on this node (the embedded processor's recovery reads).
    pub retention_holds: crate::retention_holds::RetentionHolds,
    /// Cluster mode (`[cluster] nodes`): set once at start, before any request is served.
    pub cluster: OnceLock<Arc<Cluster>>,
    /// The data directory's lock (`<data_dir>/.lock`, `flock`), held from the open until the
    /// close, so that two brokers never share a directory.
    dir_lock: Mutex<Option<File>>,
}

impl Broker {
    /// Open (or initialise) the data directory and recover every partition.
    pub fn open(config: Config) -> Result<Self, TopicError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            TopicError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        // Before anything in the directory is read or written.
        let dir_lock = lock_data_dir(&config.data_dir)?;
        let mut cluster_id = load_or_create_meta(&config.data_dir, config.node_id)?;
        if config.cluster.enabled() {
            // Every node must report the same cluster id (clients check it across brokers).
            cluster_id = format!("runnel-{}", config.cluster.name);
        }
        let metrics = Metrics::new(config.metrics);
        let topics = Arc::new(TopicRegistry::open(
            &config.data_dir,
            config.topics.clone(),
            metrics.fsync_seconds.clone(),
        )?);
        let producer_ids = ProducerIds::open(&config.data_dir)?;
        let groups = GroupDriver::open(&config.data_dir.join("groups"))
            .map(Arc::new)
            .map_err(|e| TopicError::Storage(format!("cannot open the group offsets: {e}")))?;
        Ok(Self {
            config,
            cluster_id,
            topics,
            producer_ids,
            groups,
            metrics,
            pipelines: PipelineStatuses::default(),
            queries: crate::processing::PipelineQueries::default(),
            retention_holds: crate::retention_holds::RetentionHolds::default(),
            cluster: OnceLock::new(),
            dir_lock: Mutex::new(Some(dir_lock)),
        })
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether this node coordinates consumer groups: always on a single node; in a cluster,
    /// while it leads the metadata group (FindCoordinator names it).
    pub fn is_group_coordinator(&self) -> bool {
        self.cluster()
            .is_none_or(|c| c.controller() == Some(self.node_id()))
    }

    /// Cluster mode, if this node runs in a cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Close the partition logs now (a clean shutdown): requests still in flight get an
    /// error, and a broker opened on the same directory next finds every file finished, even
    /// while a connection or flusher here still holds a partition.
    pub fn close(&self) {
        self.topics.close();
        // Nothing of this broker's writes the directory once it is unlocked.
        self.groups.close_store();
        self.producer_ids.close();
        // Unlocked: another broker may open the directory now.
        drop(
            self.dir_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

/// The name of the data directory's lock file.
pub const LOCK_FILE: &str = ".lock";

/// Take `<dir>/.lock` (an exclusive `flock`, released when the file is closed, also by a
/// crash): a second broker on the same directory — another process, or another broker in
/// this one — would recover and append to the same segments as the first, so it is refused
/// with a clear error instead (as Kafka refuses a log directory another instance locked).
fn lock_data_dir(dir: &Path) -> Result<File, TopicError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| TopicError::Storage(format!("cannot open {}: {e}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(TopicError::Storage(format!(
            "{} is in use by another runnel broker (it holds {}); stop that one or choose \
             another data directory (--data-dir)",
            dir.display(),
            path.display()
        ))),
        Err(e) => Err(TopicError::Storage(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

impl Drop for Broker {
    /// A broker dropped without [`Broker::close`] (a library user, a test) still closes its
    /// logs: nothing it leaves behind (a flusher's handle) may touch them afterwards.
    fn drop(&mut self) {
        self.close();
    }
}

fn load_or_create_meta(dir: &Path, node_id: i32) -> Result<String, TopicError> {
    let path = dir.join("meta.toml");
    match std::fs::read_to_string(&path) {
        // Left by a build that wrote the file in place and crashed while creating it, before
        // anything else in the directory existed: as if never created.
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(), "empty meta file (a crash while creating it): creating it again");
            create_meta(dir, node_id)
        }
        Ok(text) => {
            let meta: Meta = toml::from_str(&text)
                .map_err(|e| TopicError::Storage(format!("bad {}: {e}", path.display())))?;
            if meta.node_id != node_id {
                tracing::warn!(
                    stored = meta.node_id,
                    configured = node_id,
                    "node id differs from the data directory's"
                );
            }
            Ok(meta.cluster_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_meta(dir, node_id),
        Err(e) => Err(TopicError::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// A new cluster id in `dir/meta.toml`, written whole or not at all (a crash while creating
/// it must not leave a file that stops every later start).
fn create_meta(dir: &Path, node_id: i32) -> Result<String, TopicError> {
    // Kafka cluster ids are 22-character URL-safe base64 UUIDs; any stable string works for
    // clients, so use the UUID's simple form.
    let meta = Meta {
        cluster_id: uuid::Uuid::new_v4().simple().to_string(),
        node_id,
    };
    let text = toml::to_string(&meta).map_err(|e| TopicError::Storage(e.to_string()))?;
    replace_synced(dir, "meta.toml", text.as_bytes())?;
    Ok(meta.cluster_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    #[test]
    fn the_cluster_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_meta(dir.path(), 1).unwrap();
        assert_eq!(load_or_create_meta(dir.path(), 1).unwrap(), id);
        assert!(!dir.path().join("meta.toml.tmp").exists());
    }

    #[test]
    fn an_empty_meta_file_left_by_a_crash_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.toml"), "").unwrap();
        let id = load_or_create_meta(dir.path(), 1).unwrap();
        assert!(!id.is_empty());
        assert_eq!(load_or_create_meta(dir.path(), 1).unwrap(), id);
    }

    #[test]
    fn a_data_directory_opens_in_one_broker_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let config = || config_in(dir.path());
        let first = Broker::open(config()).unwrap();
        let refused = Broker::open(config())
            .err()
            .expect("a second broker is refused");
        assert!(
            refused
                .to_string()
                .contains("in use by another runnel broker"),
            "{refused}"
        );
        first.close();
        let second = Broker::open(config()).expect("free once the first is closed");
        drop(second);
        drop(Broker::open(config()).expect("free once the second is dropped"));
        drop(first);
    }

    #[test]
    fn a_closed_broker_writes_no_offsets_or_producer_ids_into_the_unlocked_directory() {
        use crate::group::{CommittedOffset, TopicPartition};
        let dir = tempfile::tempdir().unwrap();
        let config = || config_in(dir.path());
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let at = |offset| {
            vec![(
                tp.clone(),
                CommittedOffset {
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                },
            )]
        };
        let first = Broker::open(config()).unwrap();
        first.groups.apply_replicated("g", &at(5)).unwrap();
        first.producer_ids.allocate().unwrap();
        first.close();
        let second = Broker::open(config()).unwrap();
        second.groups.apply_replicated("g", &at(7)).unwrap();
        // The first broker, still alive, refuses instead of writing over the second's files.
        let err = first.groups.apply_replicated("g", &at(3)).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        assert!(first.producer_ids.allocate().is_err());
        second.close();
        drop((first, second));
        let third = Broker::open(config()).unwrap();
        let fetched = third.groups.fetch_offsets("g", Some(vec![tp.clone()]));
        assert_eq!(fetched.offsets[0].1.as_ref().map(|o| o.offset), Some(7));
    }

    #[test]
    fn a_damaged_meta_file_is_an_error_not_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.toml"), "cluster_id = ").unwrap();
        assert!(load_or_create_meta(dir.path(), 1).is_err());
    }
}
