//! `kurz-create import --account NAME [--report PATH] FILE.csv`: links from a CSV file, for
//! an operator.
//!
//! - **The same rules as the API.** It reads the service's `KURZ_*` settings (database, URL
//!   policy, blocklist file) and checks every row with [`CreateLink::validate`], so a row is
//!   accepted exactly when the same body sent to `POST /api/v1/links` would be.
//! - **Streaming.** The file is read row by row (the `csv` crate over a `BufReader`), in
//!   batches of `--batch-size` rows (1,000): memory stays bounded whatever the file's size.
//!   Each batch is one transaction with the bulk endpoint's SQL (`kurz_repository::bulk`);
//!   its pool keys are claimed in one round trip first, and while the pool is empty the
//!   import waits, with backoff, for the key-pool worker to refill it (keys are never made up
//!   here).
//! - **Resumable.** An import is its account and the SHA-256 of its file (the `imports`
//!   table). Each batch advances `rows_done`, `imported` and `rejected` in the transaction of
//!   its links, so a run that dies at any point is resumed by running the same command again:
//!   it skips the rows already committed, and no row is imported twice. A finished import run
//!   again says so and changes nothing. Two runs of one import at once cannot both commit a
//!   batch (the advance is conditional on `rows_done`): the second stops.
//! - **The report.** Rejected rows go to a CSV file (`line,code,message`, the physical line
//!   number of the row's start in the input, the header being line 1). A batch's rejections
//!   are written and synced to disk *before* its transaction commits, so a committed rejection
//!   is always in the report. A crash between the two leaves lines of a batch that did not
//!   commit; the next run cuts the report back to the last committed row before redoing that
//!   batch, so each rejected row is in the report exactly once.
//! - **Progress** goes to standard error: a bar (bytes of the file read, rows, rate) on a
//!   terminal, and otherwise a line every `--progress-every` seconds (CI logs).

mod progress;
mod report;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use csv::ByteRecord;
use kurz_repository::bulk::{ImportBatch, ImportBatchError, ImportRecord, Inserted};
use kurz_repository::{Account, KeyRepository, PgRepository, RepoError};
use sha2::{Digest, Sha256};

use crate::bulk::{Batch, Item, Outcome};
use crate::error::ApiError;
use crate::request::CreateLink;
use crate::settings::Settings;
use crate::validate::{UrlPolicy, ValidationError};

use progress::Progress;
use report::{Rejection, Report};

/// The columns a file may have; `url` is required, the others may be absent or empty.
const COLUMNS: [&str; 7] = [
    "url",
    "alias",
    "expires_at",
    "redirect_status",
    "forward_query",
    "expired_url",
    "max_visits",
];

/// Attempts of one import when PostgreSQL fails in between: each resumes from the last
/// committed batch, exactly as a new run would.
const ATTEMPTS: u32 = 5;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The account the links belong to (name or id).
    #[arg(long)]
    pub account: String,
    /// Where rejected rows go, as CSV (line,code,message); default: FILE.rejected.csv.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Seconds between progress lines when standard error is not a terminal.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_every: u64,
    /// The CSV file: a header row `url,alias,expires_at` (and optionally redirect_status,
    /// forward_query, expired_url, max_visits), then one link per row.
    pub file: PathBuf,
}

/// How an import ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub record: ImportRecord,
    pub report: PathBuf,
    /// It had finished before this run, which changed nothing.
    pub already_done: bool,
    /// Rows this run processed, and how long it took.
    pub rows_this_run: i64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        if self.already_done {
            let at = r.finished_at.map(|at| at.to_rfc3339()).unwrap_or_default();
            return write!(
                f,
                "already imported (finished {at}): {} links, {} rows rejected (report: {}); nothing to do",
                r.imported,
                r.rejected,
                self.report.display()
            );
        }
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.rows_this_run as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "imported {} links, rejected {} rows (report: {}); {} rows, {} of them in this run, in {secs:.1} s ({rate:.0} rows/s)",
            r.imported,
            r.rejected,
            self.report.display(),
            r.rows_done,
            self.rows_this_run
        )
    }
}

/// Runs (or resumes) the import of `args.file`.
pub async fn run(settings: &Settings, args: &ImportArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let (digest, size) = digest_of(&args.file)?;
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| default_report(&args.file));
    let (blocklist, _watcher) =
        crate::startup::load_blocklist(settings.url_safety.blocklist_file.as_deref())?;
    let policy = crate::startup::url_policy(settings, blocklist);
    let repo = PgRepository::new(&settings.database, "kurz-import")?;
    repo.check_schema()
        .await
        .context("checking the database schema")?;
    let account = find_account(&repo, &args.account).await?;
    let mut record = repo
        .start_import(account.id, &digest)
        .await
        .context("recording the import")?;
    let rows_before = record.rows_done;
    if record.finished_at.is_some() {
        return Ok(Summary {
            record,
            report,
            already_done: true,
            rows_this_run: 0,
            elapsed: started.elapsed(),
        });
    }
    let progress = Progress::new(size, Duration::from_secs(args.progress_every), rows_before);
    let job = Job {
        repo: &repo,
        policy: &policy,
        account: &account,
        args,
        report: &report,
        progress: &progress,
    };
    let mut attempt = 1;
    loop {
        match job.resume(&record).await {
            Ok(()) => break,
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                progress.note(&format!(
                    "PostgreSQL failed ({e:#}); resuming after the last committed batch"
                ));
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                attempt += 1;
                record = repo
                    .start_import(account.id, &digest)
                    .await
                    .context("reading the import's progress")?;
            }
            Err(e) => return Err(e),
        }
    }
    let record = repo
        .finish_import(record.id)
        .await
        .context("marking the import finished")?;
    progress.finish(&record);
    Ok(Summary {
        rows_this_run: record.rows_done - rows_before,
        record,
        report,
        already_done: false,
        elapsed: started.elapsed(),
    })
}

/// A failure another attempt may get past: PostgreSQL away, slow or restarting.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<RepoError>()
            .is_some_and(RepoError::is_unavailable)
    })
}

fn default_report(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".rejected.csv");
    PathBuf::from(name)
}

/// The SHA-256 and the size of the file, read once in full.
fn digest_of(path: &Path) -> anyhow::Result<([u8; 32], u64)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    let mut size = 0;
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

async fn find_account(repo: &PgRepository, wanted: &str) -> anyhow::Result<Account> {
    let found = match wanted.parse::<i64>() {
        Ok(id) => repo.account(id).await,
        Err(_) => repo.account_by_name(wanted).await,
    }
    .context("looking up the account")?;
    let Some(account) = found else {
        bail!("no account `{wanted}` (create it with `kurz-keypool accounts create`)");
    };
    if account.disabled_at.is_some() {
        bail!("the account `{}` is disabled", account.name);
    }
    Ok(account)
}

/// Everything one run works with.
struct Job<'a> {
    repo: &'a PgRepository,
    policy: &'a UrlPolicy,
    account: &'a Account,
    args: &'a ImportArgs,
    report: &'a Path,
    progress: &'a Progress,
}

impl Job<'_> {
    /// Imports the rows after `record.rows_done`.
    async fn resume(&self, record: &ImportRecord) -> anyhow::Result<()> {
        let file = File::open(&self.args.file)
            .with_context(|| format!("opening {}", self.args.file.display()))?;
        let mut reader = csv::ReaderBuilder::new()
            // Rows of the wrong length are that row's rejection, not the file's.
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 18, file));
        let columns = Columns::of(reader.byte_headers().context("reading the header row")?)?;
        let mut row = ByteRecord::new();
        let mut last_line = None;
        for skipped in 0..record.rows_done {
            if !reader
                .read_byte_record(&mut row)
                .context("skipping committed rows")?
            {
                bail!(
                    "the file has {skipped} data rows but {} were imported before: it changed",
                    record.rows_done
                );
            }
            last_line = row.position().map(csv::Position::line);
        }
        let mut report = Report::resume(self.report, last_line, record.rows_done > 0)
            .with_context(|| format!("preparing the report {}", self.report.display()))?;
        if let Some(note) = report.note() {
            self.progress.note(note);
        }
        let mut done = record.clone();
        self.progress.resumed(&done);
        let batch_size = self.args.batch_size as usize;
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            while batch.len() < batch_size
                && reader
                    .read_byte_record(&mut row)
                    .context("reading the file")?
            {
                let line = row.position().map_or(0, csv::Position::line);
                batch.push((line, columns.create_link(&row)));
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.commit(&mut done, &mut report, batch).await?;
            self.progress.update(reader.position().byte(), &done);
        }
    }

    /// Validates, inserts and reports one batch, and advances `done` once it committed.
    async fn commit(
        &self,
        done: &mut ImportRecord,
        report: &mut Report,
        batch: Vec<(u64, Result<CreateLink, ApiError>)>,
    ) -> anyhow::Result<()> {
        let rows = batch.len() as i64;
        let plan = Plan::new(batch, self.policy, self.account.id);
        let codes = self.claim_keys(plan.batch.pooled()).await?;
        let rows_of = plan.batch.rows(&codes);
        let batch = ImportBatch {
            import_id: done.id,
            rows_done: done.rows_done,
            rows,
            rejected: plan.batch.refused() as i64,
        };
        let inserted = self
            .repo
            .import_batch(batch, rows_of.bulk(), |inserted| {
                report.write(&plan.rejections(inserted))
            })
            .await
            .map_err(|e| match e {
                ImportBatchError::Repo(e) => anyhow::Error::new(e).context("committing a batch"),
                ImportBatchError::Superseded => anyhow::anyhow!(
                    "another run of this import is going on (its progress moved): stopped"
                ),
                ImportBatchError::Hook(e) => anyhow::Error::new(e).context("writing the report"),
            })?;
        let imported = inserted.created() as i64;
        done.rows_done += rows;
        done.imported += imported;
        done.rejected += rows - imported;
        Ok(())
    }

    /// `count` keys from the pool, waiting while it is empty.
    async fn claim_keys(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::with_capacity(count);
        let mut wait = Duration::from_millis(100);
        while keys.len() < count {
            let claimed = self
                .repo
                .claim_keys(count - keys.len())
                .await
                .context("claiming keys from the pool")?;
            let empty = claimed.is_empty();
            keys.extend(claimed);
            if keys.len() < count && empty {
                self.progress.waiting_for_keys(count - keys.len());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
        Ok(keys)
    }
}

/// Where each known column is in the file.
#[derive(Debug, Default)]
struct Columns {
    index: [Option<usize>; COLUMNS.len()],
    width: usize,
}

impl Columns {
    fn of(header: &ByteRecord) -> anyhow::Result<Self> {
        let mut columns = Self {
            width: header.len(),
            ..Self::default()
        };
        for (at, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name).unwrap_or("(not UTF-8)").trim();
            let Some(known) = COLUMNS.iter().position(|c| *c == name) else {
                bail!(
                    "unknown column `{name}` in the header row; the columns are {}",
                    COLUMNS.join(", ")
                );
            };
            if columns.index[known].replace(at).is_some() {
                bail!("the column `{name}` appears twice in the header row");
            }
        }
        if columns.index[0].is_none() {
            bail!("the header row has no `url` column (expected url,alias,expires_at)");
        }
        Ok(columns)
    }

    /// The create body of one row, or why it cannot be one.
    fn create_link(&self, row: &ByteRecord) -> Result<CreateLink, ApiError> {
        if row.len() != self.width {
            return Err(ApiError::InvalidBody(format!(
                "the row has {} fields, the header {}",
                row.len(),
                self.width
            )));
        }
        let field = |column: usize| -> Result<Option<&str>, ApiError> {
            let Some(at) = self.index[column] else {
                return Ok(None);
            };
            let raw = std::str::from_utf8(&row[at]).map_err(|_| {
                ApiError::InvalidBody(format!("the {} field is not UTF-8", COLUMNS[column]))
            })?;
            Ok(Some(raw).filter(|raw| !raw.is_empty()))
        };
        let owned = |column| field(column).map(|f| f.map(str::to_owned));
        Ok(CreateLink {
            url: owned(0)?.unwrap_or_default(),
            alias: owned(1)?,
            expires_at: owned(2)?,
            redirect_status: field(3)?
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| ValidationError::InvalidRedirectStatus)
                })
                .transpose()?,
            forward_query: match field(4)?.map(str::trim) {
                None => false,
                Some(s) if s.eq_ignore_ascii_case("true") => true,
                Some(s) if s.eq_ignore_ascii_case("false") => false,
                Some(_) => {
                    return Err(ApiError::InvalidBody(
                        "forward_query must be true, false or empty".into(),
                    ));
                }
            },
            expired_url: owned(5)?,
            max_visits: field(6)?
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| ValidationError::InvalidMaxVisits)
                })
                .transpose()?,
        })
    }
}

/// One batch after validation: the items, and the line number of each.
struct Plan {
    batch: Batch,
    lines: Vec<u64>,
}

impl Plan {
    fn new(rows: Vec<(u64, Result<CreateLink, ApiError>)>, policy: &UrlPolicy, owner: i64) -> Self {
        let now = Utc::now();
        let mut aliases = HashSet::new();
        let (lines, items) = rows
            .into_iter()
            .map(|(line, body)| (line, Item::of(body, policy, Some(owner), now, &mut aliases)))
            .unzip();
        Self {
            batch: Batch { items },
            lines,
        }
    }

    /// Every rejected row of the batch, in line order, once the database said which aliases
    /// were taken.
    fn rejections(&self, inserted: &Inserted) -> Vec<Rejection> {
        let lost = Outcome::lost();
        self.batch
            .outcomes(inserted)
            .zip(&self.lines)
            .filter_map(|(outcome, &line)| {
                let error = match outcome {
                    Outcome::Created(_) => return None,
                    Outcome::Refused(e) => e,
                    Outcome::Lost => &lost,
                };
                Some(Rejection {
                    line,
                    code: error.code(),
                    message: error.to_string(),
                })
            })
            .collect()
    }
}
