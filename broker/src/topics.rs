//! The topic registry: creates, opens, lists and deletes topics and their partition logs.
//!
//! On disk: `<data_dir>/topics/<name>/topic.toml` (id, partition count, config) and one
//! directory per partition, `<data_dir>/topics/<name>/<partition>/`. A topic is created in a
//! temporary directory and renamed into place, and deleted by renaming it away first, so a crash
//! never leaves a half-created or half-deleted topic visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::TopicDefaults;
use crate::log::file::{FileLog, FileLogConfig};
use crate::log::DirectReads;
use crate::log::{LogError, RetentionPolicy};
use crate::partition::{Partition, PartitionSettings};

/// Per-topic settings, stored with the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub flush_ms: u64,
    pub max_message_bytes: usize,
}

impl TopicConfig {
    /// The defaults of a fresh `TopicDefaults` (tests).
    #[cfg(test)]
    pub fn default_for_tests() -> Self {
        Self::from_defaults(&TopicDefaults::default())
    }

    fn from_defaults(d: &TopicDefaults) -> Self {
        Self {
            retention_ms: d.retention_ms,
            retention_bytes: d.retention_bytes,
            segment_bytes: d.segment_bytes,
            flush_ms: d.flush_ms,
            max_message_bytes: d.max_message_bytes,
        }
    }

    /// Apply one Kafka topic config (`retention.ms`, ...). Unknown keys that Kafka tools commonly
    /// send and that have no effect here (e.g. `cleanup.policy=delete`) are accepted.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), TopicError> {
        let bad = || TopicError::InvalidConfig(format!("invalid value {value:?} for {key}"));
        let int = |min: i64| {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= min)
                .ok_or_else(bad)
        };
        match key {
            "retention.ms" => self.retention_ms = int(-1)?,
            "retention.bytes" => self.retention_bytes = int(-1)?,
            "segment.bytes" => self.segment_bytes = u64::try_from(int(1024)?).map_err(|_| bad())?,
            "flush.ms" => self.flush_ms = u64::try_from(int(0)?).map_err(|_| bad())?,
            "max.message.bytes" => {
                self.max_message_bytes = usize::try_from(int(64)?).map_err(|_| bad())?
            }
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(TopicError::InvalidConfig(format!(
                    "cleanup.policy={value} is not supported (only delete)"
                )))
            }
            "min.insync.replicas" | "message.timestamp.type"
                if value == "1" || value == "CreateTime" => {}
            "compression.type" if value == "producer" => {}
            other => {
                return Err(TopicError::InvalidConfig(format!(
                    "unsupported topic config {other}"
                )))
            }
        }
        Ok(())
    }

    /// The segment layout, with the broker-wide memory settings.
    fn log_config(&self, memory: &LogMemory) -> FileLogConfig {
        FileLogConfig {
            segment_bytes: self.segment_bytes,
            cache_tail_bytes: memory.cache_tail,
            direct_reads: memory.direct_reads.clone(),
            zero_ahead_bytes_per_sec: memory.zero_ahead_bytes_per_sec,
            ..FileLogConfig::default()
        }
    }

    fn settings(&self, replicated: bool) -> PartitionSettings {
        PartitionSettings {
            replicated,
            flush_ms: self.flush_ms,
            retention: RetentionPolicy {
                retention_ms: (self.retention_ms >= 0).then_some(self.retention_ms),
                retention_bytes: u64::try_from(self.retention_bytes).ok(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicMeta {
    id: String,
    partitions: i32,
    config: TopicConfig,
    /// Cluster mode: each partition's replica node ids (the Raft voters). Absent on a single
    /// node, where every partition is local and unreplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<Vec<i32>>>,
}

/// Why a topic operation failed; each maps to a Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic already exists")]
    AlreadyExists,
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("replication factor {0} is not possible on a single node")]
    InvalidReplicationFactor(i16),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("topic has {current} partitions; it can only grow, not to {requested}")]
    PartitionsNotIncreased { current: usize, requested: i32 },
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("unknown topic")]
    Unknown,
    #[error("storage error: {0}")]
    Storage(String),
}

impl TopicError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            TopicError::AlreadyExists => 36,
            TopicError::InvalidName(_) => 17,
            TopicError::InvalidPartitions(_) | TopicError::PartitionsNotIncreased { .. } => 37,
            TopicError::InvalidReplicaAssignment(_) => 39,
            TopicError::InvalidReplicationFactor(_) => 38,
            TopicError::InvalidConfig(_) => 40,
            TopicError::Unknown => 3,
            TopicError::Storage(_) => 56,
        }
    }
}

impl From<LogError> for TopicError {
    fn from(e: LogError) -> Self {
        TopicError::Storage(e.to_string())
    }
}

fn io_err(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> TopicError {
    let what = format!("{context} {}", path.display());
    move |e| TopicError::Storage(format!("{what}: {e}"))
}

/// Kafka's topic name rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(TopicError::InvalidName(format!(
            "{name:?}: must be 1-249 characters of [a-zA-Z0-9._-] and not '.' or '..'"
        )));
    }
    Ok(())
}

/// A live topic.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub config: TopicConfig,
    /// Cluster mode: each partition's replicas (see `TopicMeta::replicas`).
    pub replicas: Option<Vec<Vec<i32>>>,
    dir: PathBuf,
}

impl Topic {
    /// Close every partition's log (the topic is deleted, or the broker stops).
    fn close(&self) {
        for p in &self.partitions {
            p.close();
        }
    }
}

/// All topics of this broker.
pub struct TopicRegistry {
    root: PathBuf,
    defaults: TopicDefaults,
    /// What every partition's log does with memory (one `O_DIRECT` budget for all).
    memory: LogMemory,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises create and delete so two requests cannot race on one name; holds whether
    /// the registry was closed ([`TopicRegistry::close`]), after which both are refused.
    admin: Mutex<bool>,
    /// Shared by every partition's flusher (a metric).
    fsync_seconds: Histogram,
}

impl TopicRegistry {
    /// Open every topic under `<data_dir>/topics`, recovering each partition log.
    /// `fsync_seconds` is where every partition records how long its fsyncs take.
    pub fn open(
        data_dir: &Path,
        defaults: TopicDefaults,
        fsync_seconds: Histogram,
    ) -> Result<Self, TopicError> {
        let root = data_dir.join("topics");
        std::fs::create_dir_all(&root).map_err(io_err("cannot create", &root))?;
        let memory = LogMemory {
            cache_tail: defaults.cache_tail(),
            direct_reads: DirectReads::with_budget(defaults.direct_read_buffer_bytes),
            zero_ahead_bytes_per_sec: defaults.zero_ahead_bytes_per_sec,
        };
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&root).map_err(io_err("cannot list", &root))? {
            let entry = entry.map_err(io_err("cannot list", &root))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".deleted-") {
                std::fs::remove_dir_all(&path).map_err(io_err("cannot clean up", &path))?;
                continue;
            }
            let topic = open_topic(&path, &name, &fsync_seconds, &memory)?;
            tracing::info!(topic = %name, partitions = topic.partitions.len(), "opened topic");
            topics.insert(name, Arc::new(topic));
        }
        Ok(Self {
            root,
            defaults,
            memory,
            topics: RwLock::new(topics),
            admin: Mutex::new(false),
            fsync_seconds,
        })
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    /// The admin lock (create, grow, delete), unless the registry is closed.
    fn admin(&self) -> Result<MutexGuard<'_, bool>, TopicError> {
        let guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if *guard {
            return Err(TopicError::Storage("the broker is shutting down".into()));
        }
        Ok(guard)
    }

    /// Close every partition's log now (see [`Partition::close`]) and refuse new topics:
    /// a clean shutdown, after which another broker may open the directory.
    pub fn close(&self) {
        let mut closed = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::replace(&mut *closed, true) {
            return; // closed already (a shutdown, then the broker's drop)
        }
        for topic in self.list() {
            topic.close();
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Get a topic, creating it with the defaults if auto-creation is on.
    pub fn get_or_auto_create(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        if !self.defaults.auto_create {
            return Err(TopicError::Unknown);
        }
        match self.create(name, self.defaults.default_partitions, &[], false) {
            Err(TopicError::AlreadyExists) => self.get(name).ok_or(TopicError::Unknown),
            other => other,
        }
    }

    /// Create a topic. With `validate_only`, check everything and create nothing.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let config = self.check_new(name, partitions, configs)?;
        if validate_only {
            if self.get(name).is_some() {
                return Err(TopicError::AlreadyExists);
            }
            return Ok(Arc::new(Topic {
                name: name.to_owned(),
                id: uuid::Uuid::nil(),
                partitions: Vec::new(),
                config,
                replicas: None,
                dir: PathBuf::new(),
            }));
        }
        let meta = TopicMeta {
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            config,
            replicas: None,
        };
        self.create_from(name, meta)
    }

    /// Check a new topic's name, partition count and configs; returns its config.
    pub fn check_new(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(String, String)],
    ) -> Result<TopicConfig, TopicError> {
        validate_name(name)?;
        if !(1..=10_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let mut config = TopicConfig::from_defaults(&self.defaults);
        for (k, v) in configs {
            config.set(k, v)?;
        }
        Ok(config)
    }

    /// Cluster mode: create a topic decided by the metadata group, with the id and replica
    /// assignment every node was given. Applying the same decision twice (a replay after a
    /// restart) changes nothing; a topic of that name with another id is left alone (a later
    /// decision deletes or keeps it).
    pub fn create_replicated(
        &self,
        name: &str,
        id: uuid::Uuid,
        config: TopicConfig,
        replicas: Vec<Vec<i32>>,
    ) -> Result<Option<Arc<Topic>>, TopicError> {
        validate_name(name)?;
        if let Some(existing) = self.get(name) {
            if existing.id != id {
                tracing::warn!(topic = %name, "a topic of this name exists with another id; left as is");
            }
            return Ok(None);
        }
        let partitions =
            i32::try_from(replicas.len()).map_err(|_| TopicError::InvalidPartitions(i32::MAX))?;
        let meta = TopicMeta {
            id: id.to_string(),
            partitions,
            config,
            replicas: Some(replicas),
        };
        match self.create_from(name, meta) {
            Ok(t) => Ok(Some(t)),
            Err(TopicError::AlreadyExists) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write a new topic's directory (in a temporary place, then renamed) and open it.
    fn create_from(&self, name: &str, meta: TopicMeta) -> Result<Arc<Topic>, TopicError> {
        let _guard = self.admin()?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists);
        }
        let partitions = meta.partitions;
        let tmp = self.root.join(format!(".tmp-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err("cannot create", &tmp))?;
        let text = toml::to_string(&meta).map_err(|e| TopicError::Storage(e.to_string()))?;
        write_synced(&tmp.join("topic.toml"), text.as_bytes())?;
        for p in 0..partitions {
            let dir = tmp.join(p.to_string());
            std::fs::create_dir(&dir).map_err(io_err("cannot create", &dir))?;
        }
        sync_dir(&tmp)?;
        let dir = self.root.join(name);
        std::fs::rename(&tmp, &dir).map_err(io_err("cannot rename into place", &dir))?;
        sync_dir(&self.root)?;
        let topic = Arc::new(open_topic(&dir, name, &self.fsync_seconds, &self.memory)?);
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), topic.clone());
        tracing::info!(topic = %name, partitions, "created topic");
        Ok(topic)
    }

    /// Grow a topic to `total` partitions (Kafka's CreatePartitions: never shrinks). The new
    /// partitions' directories exist before `topic.toml` names them, and `topic.toml` is
    /// replaced atomically, so a crash leaves either the old count or the new one. Records
    /// already in the topic stay where they are (keyed records may now hash elsewhere, as in
    /// Kafka). With `validate_only`, check and change nothing.
    pub fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _guard = self.admin()?;
        let topic = self.get(name).ok_or(TopicError::Unknown)?;
        if topic.replicas.is_some() {
            return Err(TopicError::InvalidConfig(
                "adding partitions to a replicated topic is not supported yet".into(),
            ));
        }
        let current = topic.partitions.len();
        let wanted = usize::try_from(total).map_err(|_| TopicError::InvalidPartitions(total))?;
        if wanted <= current {
            return Err(TopicError::PartitionsNotIncreased {
                current,
                requested: total,
            });
        }
        if total > 10_000 {
            return Err(TopicError::InvalidPartitions(total));
        }
        if validate_only {
            return Ok(topic);
        }
        for p in current..wanted {
            let dir = topic.dir.join(p.to_string());
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                // Left by a crash before topic.toml named it: never served, so empty.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("cannot create", &dir)(e)),
            }
        }
        sync_dir(&topic.dir)?;
        let meta = TopicMeta {
            id: topic.id.to_string(),
            partitions: total,
            config: topic.config.clone(),
            replicas: None,
        };
        let text = toml::to_string(&meta).map_err(|e| TopicError::Storage(e.to_string()))?;
        replace_synced(&topic.dir, "topic.toml", text.as_bytes())?;
        let settings = topic.config.settings(false);
        let mut partitions = topic.partitions.clone();
        for p in current..wanted {
            let index = i32::try_from(p).map_err(|_| TopicError::InvalidPartitions(total))?;
            let log = FileLog::open(
                &topic.dir.join(p.to_string()),
                topic.config.log_config(&self.memory),
            )?;
            partitions.push(Partition::start(
                name,
                index,
                Box::new(log),
                settings,
                self.fsync_seconds.clone(),
            )?);
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config: topic.config.clone(),
            replicas: None,
            dir: topic.dir.clone(),
        });
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), grown.clone());
        tracing::info!(topic = %name, from = current, to = total, "added partitions");
        Ok(grown)
    }

    /// Delete a topic and its data.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        self.delete_if(name, None)
    }

    /// Delete a topic if it exists and, when `id` is given, has that id (cluster mode: a
    /// replayed deletion must not remove a later topic of the same name).
    pub fn delete_if(&self, name: &str, id: Option<uuid::Uuid>) -> Result<(), TopicError> {
        let _guard = self.admin()?;
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            match topics.get(name) {
                Some(t) if id.is_none_or(|id| t.id == id) => {}
                _ => return Err(TopicError::Unknown),
            }
            topics.remove(name).ok_or(TopicError::Unknown)?
        };
        // Nothing may write into the directory once it is moved away.
        topic.close();
        let grave = self
            .root
            .join(format!(".deleted-{name}-{}", topic.id.simple()));
        std::fs::rename(&topic.dir, &grave).map_err(io_err("cannot move away", &topic.dir))?;
        sync_dir(&self.root)?;
        std::fs::remove_dir_all(&grave).map_err(io_err("cannot remove", &grave))?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }
}

/// The broker-wide memory and disk settings of every partition's log (`[topics]
/// page_cache_tail_bytes`, `direct_read_buffer_bytes` and `zero_ahead_bytes_per_sec`).
#[derive(Debug)]
struct LogMemory {
    cache_tail: Option<u64>,
    direct_reads: DirectReads,
    zero_ahead_bytes_per_sec: u64,
}

fn open_topic(
    dir: &Path,
    name: &str,
    fsync_seconds: &Histogram,
    memory: &LogMemory,
) -> Result<Topic, TopicError> {
    let meta_path = dir.join("topic.toml");
    let text = std::fs::read_to_string(&meta_path).map_err(io_err("cannot read", &meta_path))?;
    let meta: TopicMeta = toml::from_str(&text)
        .map_err(|e| TopicError::Storage(format!("bad {}: {e}", meta_path.display())))?;
    let id = uuid::Uuid::parse_str(&meta.id)
        .map_err(|e| TopicError::Storage(format!("bad topic id: {e}")))?;
    let settings = meta.config.settings(meta.replicas.is_some());
    let log_config = meta.config.log_config(memory);
    let partitions = (0..meta.partitions)
        .map(|p| {
            let log = FileLog::open(&dir.join(p.to_string()), log_config.clone())?;
            Ok(Partition::start(
                name,
                p,
                Box::new(log),
                settings,
                fsync_seconds.clone(),
            )?)
        })
        .collect::<Result<Vec<_>, TopicError>>()?;
    Ok(Topic {
        name: name.to_owned(),
        id,
        partitions,
        config: meta.config,
        replicas: meta.replicas,
        dir: dir.to_owned(),
    })
}

/// Write a small file and fsync it.
pub(crate) fn write_synced(path: &Path, data: &[u8]) -> Result<(), TopicError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err("cannot create", path))?;
    f.write_all(data).map_err(io_err("cannot write", path))?;
    f.sync_all().map_err(io_err("cannot fsync", path))
}

/// Put `data` in `dir/name` so that a crash at any instant leaves the old file (or none) or
/// the new one, never a torn or empty one: write `name.tmp`, fsync, rename, fsync `dir`.
pub(crate) fn replace_synced(dir: &Path, name: &str, data: &[u8]) -> Result<(), TopicError> {
    let tmp = dir.join(format!("{name}.tmp"));
    write_synced(&tmp, data)?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io_err("cannot rename into place", &path))?;
    sync_dir(dir)
}

/// fsync a directory so renames and creations inside it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), TopicError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync directory", path))
}
