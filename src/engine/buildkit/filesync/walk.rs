//! The walk behind a `FileSync` transfer: tonistiigi/fsutil's `Walk` through its
//! `FilterFS` (`fs.go`, `filter.go`, `followlinks.go`, `stat.go`, `stat_unix.go`), so the
//! daemon receives the entries, in the order and with the modes, it would get from
//! `docker buildx build`.
//!
//! - Order: depth first, parents before children, names in byte order (Go's
//!   `filepath.WalkDir`), which fsutil's receiver checks.
//! - Filters: up to three layers, each of which must keep an entry: ours (the context's
//!   `.dockerignore`, or the Dockerfile's directory narrowed to the Dockerfile), then the
//!   request's `include-patterns` (with `followpaths` resolved into them) and
//!   `exclude-patterns`. A directory one layer leaves out is still walked when a pattern
//!   could keep something under it, and is sent, before that child, only if one is kept.
//! - Stat: Go's `os.FileMode` bits in `mode`, mtime in nanoseconds, the symlink's target
//!   as `linkname` (links are never followed), a second path to an inode already sent as
//!   a hard link (`linkname` the first path, with the file's size: fsutil's `mkstat` sets
//!   it after the link, and the receiver compares it with the copy it kept from the last
//!   transfer, so a 0 there would make it rewrite every hard link, and leave a
//!   `.tmp.<n>` beside each one already linked). FIFOs, sockets and devices are
//!   skipped with a warning, as in the tar context; xattrs are not sent, as there.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use bollard_buildkit_proto::fsutil::types::Stat;

use crate::engine::context::ContextError;
use crate::engine::dockerignore::{
    self, clean, go_lossy, go_path_match, IgnoreLine, MatchInfo, PatternMatcher,
};

/// Go's `os.FileMode` bits, as fsutil puts them in `Stat.mode`.
pub(crate) mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    pub const IRREGULAR: u32 = 1 << 19;
    /// `os.ModeType`: an entry with none of these is a regular file, whose data the
    /// receiver may ask for (fsutil's `fileCanRequestData`).
    pub const TYPE: u32 = DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | IRREGULAR;
}

/// Go's `os.FileMode` from a Unix `st_mode` (`fillFileStatFromSys`).
pub(crate) fn go_file_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    mode |= match st_mode & 0o170_000 {
        0o060_000 => go_mode::DEVICE,
        0o020_000 => go_mode::DEVICE | go_mode::CHAR_DEVICE,
        0o040_000 => go_mode::DIR,
        0o010_000 => go_mode::NAMED_PIPE,
        0o120_000 => go_mode::SYMLINK,
        0o140_000 => go_mode::SOCKET,
        _ => 0,
    };
    if st_mode & 0o4000 != 0 {
        mode |= go_mode::SETUID;
    }
    if st_mode & 0o2000 != 0 {
        mode |= go_mode::SETGID;
    }
    if st_mode & 0o1000 != 0 {
        mode |= go_mode::STICKY;
    }
    mode
}

/// A regular file whose data may be asked for: where it is and which inode the walk saw,
/// so a file swapped (say, for a symlink out of the context) before it is read is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// One entry to send, in walk order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub stat: Stat,
    /// Set for regular files (hard links included), whose data may be requested.
    pub file: Option<FileRef>,
}

/// One layer of filtering (fsutil's include or exclude matcher, or our own).
#[derive(Debug, Clone)]
enum Layer {
    /// Keeps what matches (`include-patterns`, `followpaths`).
    Include(PatternMatcher),
    /// Keeps what does not match (`.dockerignore`, `exclude-patterns`).
    Exclude(PatternMatcher),
    /// Keeps these top-level names only (the Dockerfile's directory).
    Names(BTreeSet<String>),
}

/// What one layer says about one path.
struct Verdict {
    keep: bool,
    /// For a directory it does not keep: whether something below may still be kept.
    descend: bool,
    info: MatchInfo,
}

impl Layer {
    fn judge(&self, rel: &str, is_dir: bool, parent: &MatchInfo) -> Verdict {
        match self {
            Self::Include(patterns) => {
                let (matched, info) = patterns.matches_using_parent_results(rel, parent);
                let descend = !matched
                    && is_dir
                    && (!patterns.literal_prefixes_only(false)
                        || patterns.names_path_below(rel, false));
                Verdict {
                    keep: matched,
                    descend,
                    info,
                }
            }
            Self::Exclude(patterns) => {
                let (matched, info) = patterns.matches_using_parent_results(rel, parent);
                let descend = matched
                    && is_dir
                    && (!patterns.literal_prefixes_only(true)
                        || (patterns.has_exclusions() && patterns.names_path_below(rel, true)));
                Verdict {
                    keep: !matched,
                    descend,
                    info,
                }
            }
            Self::Names(names) => Verdict {
                keep: names.contains(rel),
                descend: false,
                info: MatchInfo::default(),
            },
        }
    }
}

/// The filters of one transfer: ours, then the request's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    layers: Vec<Layer>,
}

/// What the daemon asked for in one `DiffCopy` request's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Request {
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub follow_paths: Vec<String>,
}

/// Our own layer for a synced directory.
#[derive(Debug, Clone)]
pub(crate) enum BaseFilter {
    /// The context: its `.dockerignore` (possibly without patterns).
    Ignore(PatternMatcher),
    /// The Dockerfile's directory: the Dockerfile and its own ignore file, nothing else.
    Names(BTreeSet<String>),
}

impl Filter {
    /// fsutil's `NewFilterFS`: `followpaths` resolved through the symlinks under `root`
    /// into include patterns, then both pattern lists compiled.
    pub(crate) fn new(root: &Path, base: &BaseFilter, request: &Request) -> Result<Self, String> {
        let mut layers = vec![match base {
            BaseFilter::Ignore(matcher) => Layer::Exclude(matcher.clone()),
            BaseFilter::Names(names) => Layer::Names(names.clone()),
        }];
        let mut includes = request.include_patterns.clone();
        if !request.follow_paths.is_empty() {
            if let Some(targets) = follow_links(root, &request.follow_paths) {
                includes.extend(targets);
                includes = dedupe_paths(includes).unwrap_or_default();
            }
        }
        let compile = |patterns: &[String], what: &str| {
            PatternMatcher::new(patterns.iter().map(IgnoreLine::synthetic))
                .map_err(|e| format!("invalid {what} {patterns:?}: {e}"))
        };
        if !includes.is_empty() {
            layers.push(Layer::Include(compile(&includes, "include-patterns")?));
        }
        if !request.exclude_patterns.is_empty() {
            layers.push(Layer::Exclude(compile(
                &request.exclude_patterns,
                "exclude-patterns",
            )?));
        }
        Ok(Self { layers })
    }
}

/// A directory being walked, with what each layer said about it.
struct Frame {
    abs: PathBuf,
    rel: Option<String>,
    infos: Vec<MatchInfo>,
    names: std::vec::IntoIter<std::ffi::OsString>,
    /// Its entry, until it is sent: a directory left out by a layer is sent only before
    /// the first entry kept below it.
    pending: Option<Entry>,
}

/// Walks `root` and calls `emit` with each entry to send, in order. `reset_owner` sends
/// uid and gid 0 (as the Docker CLI does for the context).
pub(crate) fn walk(
    root: &Path,
    filter: &Filter,
    reset_owner: bool,
    mut emit: impl FnMut(Entry) -> Result<(), ContextError>,
) -> Result<(), ContextError> {
    let layers = filter.layers.len();
    let mut hard_links: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![open_frame(
        root.to_owned(),
        None,
        vec![MatchInfo::default(); layers],
        None,
    )?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let abs = frame.abs.join(&name);
        let name_text = go_lossy(name.as_bytes()).into_owned();
        let rel = frame
            .rel
            .as_ref()
            .map_or_else(|| name_text.clone(), |dir| format!("{dir}/{name_text}"));
        let meta = fs::symlink_metadata(&abs).map_err(|source| unreadable(&abs, source))?;
        let kind = meta.file_type();
        let is_dir = kind.is_dir();

        let mut keep = true;
        let mut descend = true;
        let mut infos = Vec::with_capacity(layers);
        for (layer, parent) in filter.layers.iter().zip(&frame.infos) {
            let verdict = layer.judge(&rel, is_dir, parent);
            keep &= verdict.keep;
            descend &= verdict.keep || verdict.descend;
            infos.push(verdict.info);
        }
        if !kind.is_dir() && !kind.is_file() && !kind.is_symlink() {
            if keep {
                tracing::warn!(path = %abs.display(), "skipping a FIFO, socket or device: it cannot be sent in a build context");
            }
            continue;
        }
        if !(keep || is_dir && descend) {
            continue;
        }
        if std::str::from_utf8(name.as_bytes()).is_err() {
            if keep {
                return Err(ContextError::NameNotUtf8 { path: abs });
            }
            continue;
        }
        let entry = make_entry(&abs, &rel, &meta, reset_owner, &mut hard_links)?;
        if keep {
            // Parents left out by a layer go first, outermost first.
            for frame in &mut stack {
                if let Some(parent) = frame.pending.take() {
                    emit(parent)?;
                }
            }
        }
        let (sent, pending) = if keep {
            (Some(entry), None)
        } else {
            (None, Some(entry))
        };
        if let Some(entry) = sent {
            emit(entry)?;
        }
        if is_dir && descend {
            stack.push(open_frame(abs, Some(rel), infos, pending)?);
        }
    }
    Ok(())
}

fn open_frame(
    abs: PathBuf,
    rel: Option<String>,
    infos: Vec<MatchInfo>,
    pending: Option<Entry>,
) -> Result<Frame, ContextError> {
    let mut names = fs::read_dir(&abs)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|source| unreadable(&abs, source))?;
    names.sort();
    Ok(Frame {
        abs,
        rel,
        infos,
        names: names.into_iter(),
        pending,
    })
}

/// fsutil's `mkstat` with the hard-link bookkeeping of `setUnixOpt`.
fn make_entry(
    abs: &Path,
    rel: &str,
    meta: &Metadata,
    reset_owner: bool,
    hard_links: &mut HashMap<(u64, u64), String>,
) -> Result<Entry, ContextError> {
    let kind = meta.file_type();
    let mut stat = Stat {
        path: rel.to_owned(),
        mode: go_file_mode(meta.mode()),
        uid: if reset_owner { 0 } else { meta.uid() },
        gid: if reset_owner { 0 } else { meta.gid() },
        size: 0,
        mod_time: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ..Stat::default()
    };
    if kind.is_dir() {
        return Ok(Entry { stat, file: None });
    }
    stat.size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
    if kind.is_symlink() {
        let target = fs::read_link(abs).map_err(|source| unreadable(abs, source))?;
        stat.linkname =
            String::from_utf8(target.as_os_str().as_bytes().to_vec()).map_err(|_| {
                ContextError::NameNotUtf8 {
                    path: abs.to_owned(),
                }
            })?;
        return Ok(Entry { stat, file: None });
    }
    if meta.nlink() > 1 {
        match hard_links.get(&(meta.dev(), meta.ino())) {
            Some(first) => stat.linkname.clone_from(first),
            None => {
                hard_links.insert((meta.dev(), meta.ino()), rel.to_owned());
            }
        }
    }
    Ok(Entry {
        stat,
        file: Some(FileRef {
            path: abs.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        }),
    })
}

fn unreadable(path: &Path, source: std::io::Error) -> ContextError {
    ContextError::Unreadable {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------
// fsutil's FollowLinks: `followpaths` resolved through symlinks into include patterns.
// ---------------------------------------------------------------------------------

/// Go's `filepath.Join` of two slash paths.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => String::new(),
        (true, false) => clean(b),
        (false, true) => clean(a),
        (false, false) => clean(&format!("{a}/{b}")),
    }
}

fn base(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// The resolved paths, sorted and deduplicated; `None` when one is the root (no filter).
fn follow_links(root: &Path, paths: &[String]) -> Option<Vec<String>> {
    let mut resolved = BTreeSet::new();
    for path in paths {
        follow(root, path, &mut resolved, 0);
    }
    dedupe_paths(resolved.into_iter().collect())
}

/// Bounds the recursion of a pathological link farm; fsutil relies on its `resolved` set.
const MAX_LINK_DEPTH: usize = 64;

fn follow(root: &Path, path: &str, resolved: &mut BTreeSet<String>, depth: usize) {
    if depth > MAX_LINK_DEPTH {
        return;
    }
    let mut rest = join(".", path);
    let mut current = ".".to_owned();
    loop {
        let (first, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
        current = join(&current, first);
        let targets = read_symlink(root, &current, true);
        rest = tail.to_owned();
        if (rest.is_empty() || !targets.is_empty()) && resolved.contains(&current) {
            return;
        }
        if !targets.is_empty() {
            resolved.insert(current);
            for target in targets {
                follow(root, &join(&target, &rest), resolved, depth + 1);
            }
            return;
        }
        if rest.is_empty() {
            resolved.insert(current);
            return;
        }
    }
}

/// The targets of the symlink at `path` (or, when its last name has wildcards, of every
/// symlink it matches), as paths from the root; empty when it is no symlink.
fn read_symlink(root: &Path, path: &str, wildcards: bool) -> Vec<String> {
    // A path that climbs out of the root names nothing in it.
    if path == ".." || path.starts_with("../") {
        return Vec::new();
    }
    let name = base(path);
    let parent = dockerignore::dir(path);
    if wildcards && contains_wildcards(name) {
        let Ok(entries) = fs::read_dir(root.join(&parent)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| go_lossy(e.file_name().as_bytes()).into_owned())
            .filter(|candidate| go_path_match(name, candidate))
            .collect();
        names.sort();
        return names
            .iter()
            .flat_map(|candidate| read_symlink(root, &join(&parent, candidate), false))
            .collect();
    }
    if path == "." || path == "/" {
        return Vec::new();
    }
    let abs = root.join(path);
    match fs::symlink_metadata(&abs) {
        Ok(meta) if meta.file_type().is_symlink() => {}
        _ => return Vec::new(),
    }
    let Ok(target) = fs::read_link(&abs) else {
        return Vec::new();
    };
    let link = clean(&go_lossy(target.as_os_str().as_bytes()));
    if link.starts_with('/') {
        vec![link]
    } else {
        vec![join("/", &join(&parent, &link))]
    }
}

fn contains_wildcards(name: &str) -> bool {
    let mut bytes = name.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

/// fsutil's `dedupePaths`: drops paths under one already listed; `None` if one is `.`.
fn dedupe_paths(paths: Vec<String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    let mut last = String::new();
    for path in paths {
        if path == "." {
            return None;
        }
        if path.starts_with(&format!("{last}/")) {
            continue;
        }
        last.clone_from(&path);
        out.push(path);
    }
    Some(out)
}

#[cfg(test)]
mod tests;
