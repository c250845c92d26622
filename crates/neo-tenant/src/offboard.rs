//! Offboarding a tenant (feature `offboard`): export everything every store keeps for it into
//! one zstd-compressed JSON-lines archive, then purge it from every store; resumable.
//!
//! # The archive
//! `{archive_dir}/{tenant}.jsonl.zst`, one line per row:
//! `{"store":"orgs","table":"organizations","row":{...}}`. [`read_archive`] reads it back.
//!
//! # Resuming
//! A manifest, `{archive_dir}/{tenant}.offboard.json`, is the commit point. The export is
//! written to `{tenant}.jsonl.zst.partial`, synced, renamed to the archive, and only then is the
//! manifest written (temporary file, sync, rename). Purging starts only once the manifest
//! exists, and the manifest records each store once it is purged. A run that finds no manifest
//! exports again from scratch (nothing was purged yet, so nothing is lost); a run that finds one
//! never exports again (a partly purged tenant would give a partial archive) and purges the
//! stores not yet recorded. Purges are idempotent, so a crash between a purge and its record
//! only repeats a purge that deletes nothing.

use neo_core::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, ExportSink, TenantData};

/// Where archives go and how hard they are compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OffboardConfig {
    /// The directory of archives and manifests (created when missing). Keep it on storage
    /// that outlives the process: the manifest is what lets an interrupted offboarding resume.
    pub archive_dir: PathBuf,
    /// zstd level, 1 (fast) to 22 (small).
    pub zstd_level: i32,
}

impl Default for OffboardConfig {
    fn default() -> Self {
        OffboardConfig {
            archive_dir: PathBuf::from("offboarded"),
            zstd_level: 3,
        }
    }
}

impl OffboardConfig {
    /// The default configuration with archives in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        OffboardConfig {
            archive_dir: dir.into(),
            ..Self::default()
        }
    }
}

/// What [`Offboarding::run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffboardReport {
    /// The tenant.
    pub tenant: TenantId,
    /// The archive holding everything that was exported.
    pub archive: PathBuf,
    /// Rows exported, per store (from the manifest when the export was done by an earlier run).
    pub exported: BTreeMap<String, u64>,
    /// Rows purged by this run, per store purged in this run.
    pub purged: BTreeMap<String, u64>,
    /// Whether this run found an earlier run's manifest and resumed it.
    pub resumed: bool,
}

/// One line of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedRow {
    /// The store that exported it.
    pub store: String,
    /// The table (or collection) the store named.
    pub table: String,
    /// The row.
    pub row: serde_json::Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    tenant: String,
    exported: BTreeMap<String, u64>,
    purged: BTreeMap<String, u64>,
}

/// Exports a tenant from every store, then purges it from every store.
///
/// Stores are exported and purged in the order they were added: add the ones that hold
/// references to others first (e.g. webhooks before the queue their jobs are in), and the
/// schema itself (neo-db's `TenantMigrator` in schema-per-tenant mode) last.
///
/// # Example
/// ```no_run
/// # async fn demo(orgs: impl neo_tenant::TenantData + 'static, tenant: neo_core::TenantId) -> Result<(), neo_tenant::Error> {
/// use neo_tenant::{OffboardConfig, Offboarding};
/// let offboarding = Offboarding::new(OffboardConfig::in_dir("/var/lib/app/offboarded")).with(orgs);
/// let report = offboarding.run(tenant).await?; // run it again after a crash: it resumes
/// println!("archived to {}", report.archive.display());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Offboarding {
    config: OffboardConfig,
    stores: Vec<Arc<dyn TenantData>>,
}

impl std::fmt::Debug for Offboarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offboarding")
            .field("config", &self.config)
            .field(
                "stores",
                &self.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Offboarding {
    /// An offboarding over no stores yet.
    pub fn new(config: OffboardConfig) -> Self {
        Offboarding {
            config,
            stores: Vec::new(),
        }
    }

    /// Adds a store.
    #[must_use]
    pub fn with(self, store: impl TenantData + 'static) -> Self {
        self.with_shared(Arc::new(store))
    }

    /// Adds a shared store.
    #[must_use]
    pub fn with_shared(mut self, store: Arc<dyn TenantData>) -> Self {
        self.stores.push(store);
        self
    }

    /// Where `tenant`'s archive is (or will be) written.
    pub fn archive_path(&self, tenant: TenantId) -> PathBuf {
        self.config.archive_dir.join(format!("{tenant}.jsonl.zst"))
    }

    fn manifest_path(&self, tenant: TenantId) -> PathBuf {
        self.config
            .archive_dir
            .join(format!("{tenant}.offboard.json"))
    }

    /// Exports `tenant` from every store into its archive, then purges it from every store;
    /// resumes an earlier interrupted run (see the module docs).
    ///
    /// # Errors
    /// [`Error::Archive`] when the archive or manifest cannot be written; [`Error::Store`]
    /// when a store fails (run again to resume).
    pub async fn run(&self, tenant: TenantId) -> Result<OffboardReport, Error> {
        let names: Vec<&str> = self.stores.iter().map(|s| s.name()).collect();
        if let Some(dup) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            return Err(Error::Store {
                store: (*dup).to_owned(),
                kind: neo_core::ErrorKind::Configuration,
                message: "two stores of one offboarding have the same name".into(),
            });
        }
        std::fs::create_dir_all(&self.config.archive_dir)
            .map_err(|e| archive_error(&self.config.archive_dir, &e))?;
        let manifest_path = self.manifest_path(tenant);
        let archive = self.archive_path(tenant);
        let (mut manifest, resumed) = match read_manifest(&manifest_path)? {
            Some(manifest) => (manifest, true),
            None => {
                let exported = self.export(tenant, &archive).await?;
                let manifest = Manifest {
                    tenant: tenant.to_string(),
                    exported,
                    purged: BTreeMap::new(),
                };
                write_manifest(&manifest_path, &manifest)?;
                (manifest, false)
            }
        };
        let mut purged = BTreeMap::new();
        for store in &self.stores {
            if manifest.purged.contains_key(store.name()) {
                continue;
            }
            let rows = store.purge(tenant).await?;
            tracing::info!(tenant = %tenant, store = store.name(), rows, "tenant data purged");
            manifest.purged.insert(store.name().to_owned(), rows);
            write_manifest(&manifest_path, &manifest)?;
            purged.insert(store.name().to_owned(), rows);
        }
        Ok(OffboardReport {
            tenant,
            archive,
            exported: manifest.exported,
            purged,
            resumed,
        })
    }

    async fn export(
        &self,
        tenant: TenantId,
        archive: &Path,
    ) -> Result<BTreeMap<String, u64>, Error> {
        let mut sink = ArchiveSink {
            store: String::new(),
            writer: ArchiveWriter::create(archive, self.config.zstd_level)?,
        };
        let mut exported = BTreeMap::new();
        for store in &self.stores {
            sink.store = store.name().to_owned();
            let rows = store.export(tenant, &mut sink).await?;
            tracing::info!(tenant = %tenant, store = store.name(), rows, "tenant data exported");
            exported.insert(store.name().to_owned(), rows);
        }
        sink.writer.finish()?;
        Ok(exported)
    }
}

/// Writes an archive in the format [`read_archive`] reads: zstd-compressed JSON lines, one
/// [`ArchivedRow`] each. What [`Offboarding`] writes, and what other archivers (neo-events'
/// partition retention) write so that one reader serves them all.
///
/// The rows go to `{path}.partial` (with `.partial` appended to the file name);
/// [`finish`](Self::finish) flushes, syncs and renames it to `path`, so `path` exists only
/// complete. A writer dropped without `finish` leaves the partial file.
///
/// # Example
/// ```
/// # fn demo(dir: &std::path::Path) -> Result<(), neo_tenant::Error> {
/// use neo_tenant::{ArchiveWriter, read_archive};
/// let path = dir.join("rows.jsonl.zst");
/// let mut writer = ArchiveWriter::create(&path, 3)?;
/// writer.row("outbox", "outbox", serde_json::json!({"id": 1}))?;
/// writer.finish()?;
/// let rows = read_archive(&path)?;
/// assert_eq!(rows[0].row, serde_json::json!({"id": 1}));
/// # Ok(()) }
/// # demo(&std::env::temp_dir()).unwrap();
/// ```
pub struct ArchiveWriter {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<zstd::Encoder<'static, File>>,
    line: Vec<u8>,
    rows: u64,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    /// Starts the archive `path` at zstd `level` (1 fast to 22 small).
    ///
    /// # Errors
    /// [`Error::Archive`] when the partial file cannot be created.
    pub fn create(path: &Path, level: i32) -> Result<Self, Error> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = File::create(&partial).map_err(|e| archive_error(&partial, &e))?;
        let encoder = zstd::Encoder::new(file, level).map_err(|e| archive_error(&partial, &e))?;
        Ok(ArchiveWriter {
            path: path.to_owned(),
            partial,
            out: BufWriter::new(encoder),
            line: Vec::new(),
            rows: 0,
        })
    }

    /// Appends one row of `store`'s `table`.
    ///
    /// # Errors
    /// [`Error::Archive`] when it cannot be written.
    pub fn row(&mut self, store: &str, table: &str, row: serde_json::Value) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            store: &'a str,
            table: &'a str,
            row: serde_json::Value,
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Line { store, table, row })
            .map_err(|e| archive_error(&self.partial, &e))?;
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(|e| archive_error(&self.partial, &e))?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the compressed stream, syncs the file and renames it to the archive's path;
    /// returns that path.
    ///
    /// # Errors
    /// [`Error::Archive`] when any of that fails (the partial file may be left).
    pub fn finish(self) -> Result<PathBuf, Error> {
        let partial = self.partial;
        let encoder = self
            .out
            .into_inner()
            .map_err(|e| archive_error(&partial, e.error()))?;
        let file = encoder.finish().map_err(|e| archive_error(&partial, &e))?;
        file.sync_all().map_err(|e| archive_error(&partial, &e))?;
        std::fs::rename(&partial, &self.path).map_err(|e| archive_error(&self.path, &e))?;
        Ok(self.path)
    }
}

struct ArchiveSink {
    store: String,
    writer: ArchiveWriter,
}

impl ExportSink for ArchiveSink {
    fn row(&mut self, table: &str, row: serde_json::Value) -> Result<(), Error> {
        self.writer.row(&self.store, table, row)
    }
}

/// Reads an archive written by [`Offboarding::run`], row by row in the order written.
///
/// # Errors
/// [`Error::Archive`] when the file cannot be read or a line is not an archived row.
pub fn read_archive(path: &Path) -> Result<Vec<ArchivedRow>, Error> {
    let file = File::open(path).map_err(|e| archive_error(path, &e))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| archive_error(path, &e))?;
    let mut rows = Vec::new();
    for line in BufReader::new(decoder).lines() {
        let line = line.map_err(|e| archive_error(path, &e))?;
        if line.is_empty() {
            continue;
        }
        rows.push(serde_json::from_str(&line).map_err(|e| archive_error(path, &e))?);
    }
    Ok(rows)
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| archive_error(path, &e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(archive_error(path, &e)),
    }
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), Error> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| archive_error(path, &e))?;
    let mut file = File::create(&tmp).map_err(|e| archive_error(&tmp, &e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| archive_error(&tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| archive_error(path, &e))
}

fn archive_error(path: &Path, error: &dyn std::error::Error) -> Error {
    Error::Archive {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataFuture;
    use neo_core::ErrorKind;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Rows per tenant in memory; fails the first `fail_purges` purges and `fail_exports`
    /// exports, the way a store that loses its database mid-way would.
    #[derive(Default)]
    struct Rows {
        name: &'static str,
        rows: Mutex<HashMap<TenantId, Vec<serde_json::Value>>>,
        fail_purges: AtomicU32,
        fail_exports: AtomicU32,
        purges: AtomicU32,
    }

    impl Rows {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Rows {
                name,
                ..Rows::default()
            })
        }
        fn put(&self, tenant: TenantId, row: serde_json::Value) {
            self.rows
                .lock()
                .expect("lock")
                .entry(tenant)
                .or_default()
                .push(row);
        }
        fn count(&self, tenant: TenantId) -> usize {
            self.rows
                .lock()
                .expect("lock")
                .get(&tenant)
                .map_or(0, Vec::len)
        }
    }

    fn fail_once(counter: &AtomicU32, store: &str) -> Result<(), Error> {
        if counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Store {
                store: store.into(),
                kind: ErrorKind::Unavailable,
                message: "connection lost".into(),
            });
        }
        Ok(())
    }

    impl TenantData for Rows {
        fn name(&self) -> &str {
            self.name
        }
        fn export<'a>(
            &'a self,
            tenant: TenantId,
            sink: &'a mut dyn ExportSink,
        ) -> DataFuture<'a, u64> {
            Box::pin(async move {
                let rows = self
                    .rows
                    .lock()
                    .expect("lock")
                    .get(&tenant)
                    .cloned()
                    .unwrap_or_default();
                let mut n = 0;
                for row in rows {
                    // Fails after the first row, so a partial archive exists on disk.
                    if n == 1 {
                        fail_once(&self.fail_exports, self.name)?;
                    }
                    sink.row("rows", row)?;
                    n += 1;
                }
                Ok(n)
            })
        }
        fn purge(&self, tenant: TenantId) -> DataFuture<'_, u64> {
            Box::pin(async move {
                fail_once(&self.fail_purges, self.name)?;
                self.purges.fetch_add(1, Ordering::SeqCst);
                let removed = self.rows.lock().expect("lock").remove(&tenant);
                Ok(removed.map_or(0, |r| r.len() as u64))
            })
        }
    }

    fn seeded() -> (Arc<Rows>, Arc<Rows>, TenantId, TenantId) {
        let (a, b) = (TenantId::new(), TenantId::new());
        let orgs = Rows::new("orgs");
        let jobs = Rows::new("jobs");
        for i in 0..3 {
            orgs.put(a, serde_json::json!({ "org": i, "tenant": "a" }));
            jobs.put(a, serde_json::json!({ "job": i }));
        }
        orgs.put(b, serde_json::json!({ "org": 0, "tenant": "b" }));
        jobs.put(b, serde_json::json!({ "job": 0 }));
        (orgs, jobs, a, b)
    }

    fn offboarding(dir: &Path, orgs: &Arc<Rows>, jobs: &Arc<Rows>) -> Offboarding {
        Offboarding::new(OffboardConfig::in_dir(dir))
            .with_shared(orgs.clone())
            .with_shared(jobs.clone())
    }

    #[tokio::test]
    async fn exports_then_purges_one_tenant_and_leaves_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (orgs, jobs, a, b) = seeded();
        let report = offboarding(dir.path(), &orgs, &jobs)
            .run(a)
            .await
            .expect("offboard");
        assert!(!report.resumed);
        assert_eq!(report.exported.get("orgs"), Some(&3));
        assert_eq!(report.purged.get("jobs"), Some(&3));
        let archived = read_archive(&report.archive).expect("archive");
        assert_eq!(archived.len(), 6);
        assert!(
            archived
                .iter()
                .all(|r| r.row.get("tenant") != Some(&"b".into()))
        );
        assert_eq!(archived[0].store, "orgs");
        assert_eq!(archived[0].table, "rows");
        assert_eq!((orgs.count(a), jobs.count(a)), (0, 0));
        assert_eq!((orgs.count(b), jobs.count(b)), (1, 1));
        // Offboarding an offboarded tenant again is a no-op that succeeds.
        let again = offboarding(dir.path(), &orgs, &jobs)
            .run(a)
            .await
            .expect("again");
        assert!(again.resumed && again.purged.is_empty());
        assert_eq!(read_archive(&again.archive).expect("archive").len(), 6);
    }

    #[tokio::test]
    async fn an_interrupted_purge_resumes_without_exporting_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (orgs, jobs, a, b) = seeded();
        jobs.fail_purges.store(1, Ordering::SeqCst);
        let first = offboarding(dir.path(), &orgs, &jobs).run(a).await;
        assert!(
            matches!(&first, Err(Error::Store { store, .. }) if store == "jobs"),
            "{first:?}"
        );
        assert_eq!(
            (orgs.count(a), jobs.count(a)),
            (0, 3),
            "orgs purged, jobs not"
        );

        let resumed = offboarding(dir.path(), &orgs, &jobs)
            .run(a)
            .await
            .expect("resume");
        assert!(resumed.resumed);
        // The archive is the one written before any purge: orgs' rows are still in it.
        assert_eq!(resumed.exported.get("orgs"), Some(&3));
        assert_eq!(read_archive(&resumed.archive).expect("archive").len(), 6);
        assert_eq!(resumed.purged.keys().collect::<Vec<_>>(), ["jobs"]);
        assert_eq!(
            orgs.purges.load(Ordering::SeqCst),
            1,
            "orgs is not purged twice"
        );
        assert_eq!(jobs.count(a), 0);
        assert_eq!((orgs.count(b), jobs.count(b)), (1, 1));
    }

    #[tokio::test]
    async fn an_interrupted_export_purges_nothing_and_is_redone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (orgs, jobs, a, _) = seeded();
        jobs.fail_exports.store(1, Ordering::SeqCst);
        let off = offboarding(dir.path(), &orgs, &jobs);
        assert!(off.run(a).await.is_err());
        assert_eq!((orgs.count(a), jobs.count(a)), (3, 3), "nothing purged");
        assert!(
            !off.archive_path(a).exists(),
            "no archive from a failed export"
        );
        let report = off.run(a).await.expect("second run");
        assert!(!report.resumed);
        assert_eq!(read_archive(&report.archive).expect("archive").len(), 6);
        assert_eq!((orgs.count(a), jobs.count(a)), (0, 0));
    }

    #[tokio::test]
    async fn two_stores_with_one_name_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (orgs, _, a, _) = seeded();
        let off = Offboarding::new(OffboardConfig::in_dir(dir.path()))
            .with_shared(orgs.clone())
            .with_shared(orgs.clone());
        let err = off.run(a).await.expect_err("duplicate");
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert_eq!(orgs.count(a), 3);
    }
}
