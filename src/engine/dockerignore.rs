//! Docker's `.dockerignore` semantics, ported from moby/patternmatcher (and its
//! `ignorefile.ReadAll`) so that the context we send holds exactly the files
//! `docker build` would send.
//!
//! The port keeps moby's quirks on purpose (`**file` is a plain suffix match,
//! `dir/**` a plain prefix match, a pattern can never exclude the root), because a
//! user's `.dockerignore` was written and tested against Docker, not against us.
//! The one deliberate difference: moby compiles each pattern's regular expression
//! lazily and fails only when a path reaches it, while we compile them all up front
//! so that a broken `.dockerignore` fails the action before any AWS call.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;

mod compile;
use compile::{compile, go_match, BadPattern, BAD_PATTERN};
#[cfg(test)]
use compile::{compile_go, Kind};

/// A `.dockerignore` that Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerignoreError {
    /// A line that is only `!`: an exception with nothing to re-include.
    #[error("{}illegal exclusion pattern: \"!\"", LineLabel(*line))]
    IllegalExclusion { line: usize },
    /// A pattern Go's `filepath.Match` or moby's regexp compiler rejects.
    #[error("{}syntax error in pattern {pattern:?}: {reason}", LineLabel(*line))]
    Syntax {
        line: usize,
        pattern: String,
        reason: String,
    },
}

/// Prefixes a message with its line, unless the pattern was not read from a file.
struct LineLabel(usize);

impl fmt::Display for LineLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            line => write!(f, "line {line}: "),
        }
    }
}

/// One pattern as `ignorefile.ReadAll` returns it, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreLine {
    /// 1-based line number in the ignore file; 0 for a pattern added by the program.
    pub line: usize,
    /// The normalised pattern, with a leading `!` for an exception.
    pub pattern: String,
}

impl IgnoreLine {
    /// A pattern that did not come from a file (such as the `!Dockerfile` the CLI adds).
    pub fn synthetic(pattern: impl Into<String>) -> Self {
        Self {
            line: 0,
            pattern: pattern.into(),
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Port of `ignorefile.ReadAll`: splits the file as Go's `bufio.ScanLines` does
/// (LF, with a trailing CR dropped), drops a BOM on the first line, skips comments
/// (a `#` in column one only, before trimming, as Docker does) and blank lines, and
/// normalises each pattern with `filepath.Clean` minus one leading `/`.
pub fn read_all(content: &[u8]) -> Vec<IgnoreLine> {
    let mut lines = Vec::new();
    for (index, raw) in content.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if index == 0 {
            raw.strip_prefix(UTF8_BOM).unwrap_or(raw)
        } else {
            raw
        };
        let text = go_lossy(raw);
        if text.starts_with('#') {
            continue;
        }
        if let Some(pattern) = normalise_line(&text) {
            lines.push(IgnoreLine {
                line: index + 1,
                pattern,
            });
        }
    }
    lines
}

/// The per-line body of `ReadAll`, after comments are gone.
fn normalise_line(text: &str) -> Option<String> {
    let mut pattern = text.trim();
    if pattern.is_empty() {
        return None;
    }
    let invert = pattern.starts_with('!');
    if invert {
        pattern = pattern[1..].trim();
    }
    let mut normalised = String::new();
    if !pattern.is_empty() {
        let cleaned = clean(pattern);
        normalised = match cleaned.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.to_owned(),
            _ => cleaned,
        };
    }
    Some(if invert {
        format!("!{normalised}")
    } else {
        normalised
    })
}

/// Decodes bytes as Go's regexp and string code see them: every byte of an invalid
/// UTF-8 sequence becomes one U+FFFD, so `?` consumes one byte of a non-UTF-8 name
/// just as it does in Docker.
pub fn go_lossy(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                break;
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = err.error_len().unwrap_or(after.len());
                out.extend(std::iter::repeat_n('\u{FFFD}', bad));
                rest = &after[bad..];
            }
        }
    }
    Cow::Owned(out)
}

/// Port of Go's `path.Clean`: the lexical shortest equivalent of a slash path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Port of Go's `filepath.Dir` on a slash path.
pub(crate) fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(slash) => clean(&path[..=slash]),
        None => ".".to_owned(),
    }
}

/// How a compiled pattern is tested, as moby's `matchType`: the cheap kinds avoid a
/// regexp, and they also carry moby's exact (sometimes surprising) semantics.
#[derive(Debug, Clone)]
enum Matcher {
    Exact,
    Prefix,
    Suffix,
    Regexp(Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    matcher: Matcher,
}

impl Pattern {
    /// moby's `Pattern.match`.
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Matcher::Suffix => {
                let suffix = &self.cleaned[2..];
                // `**/foo` also matches `foo` itself, with no directory before it.
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Matcher::Regexp(re) => re.is_match(path),
        }
    }

    /// Whether the pattern matches `file` or, for `MatchesOrParentMatches`, any of the
    /// parent directory prefixes built from `parent_dirs`.
    fn matches_self_or_parent(&self, file: &str, parent_prefixes: &[String]) -> bool {
        self.matches(file) || parent_prefixes.iter().any(|p| self.matches(p))
    }
}

/// Which patterns matched a directory, so its children need not re-test those
/// patterns against every parent (moby's `MatchInfo`).
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// The compiled patterns of one ignore file (moby's `PatternMatcher`).
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Reads and compiles an ignore file's content.
    pub fn parse(content: &[u8]) -> Result<Self, DockerignoreError> {
        Self::new(read_all(content))
    }

    /// Compiles patterns as `ReadAll` returns them (moby's `New`).
    pub fn new(lines: impl IntoIterator<Item = IgnoreLine>) -> Result<Self, DockerignoreError> {
        let mut matcher = Self::default();
        for line in lines {
            matcher.push(&line)?;
        }
        Ok(matcher)
    }

    /// Appends one pattern, applying `New`'s own trimming and cleaning.
    pub fn push(&mut self, line: &IgnoreLine) -> Result<(), DockerignoreError> {
        let trimmed = line.pattern.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let mut cleaned = clean(trimmed);
        let exclusion = cleaned.starts_with('!');
        if exclusion {
            if cleaned.len() == 1 {
                return Err(DockerignoreError::IllegalExclusion { line: line.line });
            }
            cleaned.remove(0);
        }
        let syntax = |reason: String| DockerignoreError::Syntax {
            line: line.line,
            pattern: line.pattern.clone(),
            reason,
        };
        // moby validates with filepath.Match because its rules differ from the regexp's.
        go_match(cleaned.as_bytes(), b".").map_err(|BadPattern| syntax(BAD_PATTERN.to_owned()))?;
        let matcher = compile(&cleaned).map_err(syntax)?;
        self.exclusions |= exclusion;
        self.patterns.push(Pattern {
            cleaned,
            exclusion,
            matcher,
        });
        Ok(())
    }

    /// Whether any `!` exception exists, which forbids pruning excluded directories blindly.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// moby's `MatchesOrParentMatches`: whether a slash-separated path relative to the
    /// context is left out, counting a pattern that matches any of its parent
    /// directories. The last matching pattern wins.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let parent = dir(rel_path);
        let prefixes = if parent == "." {
            Vec::new()
        } else {
            parent_prefixes(&parent)
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that could flip the answer is worth testing.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches_self_or_parent(rel_path, &prefixes) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// moby's `MatchesUsingParentResults`, which is what Docker's tar walk uses: like
    /// [`Self::is_excluded`], but a pattern that matched the parent directory (in
    /// `parent`) counts as matching without being re-tested, and parent prefixes are
    /// tested only when `parent` is empty (a child of the context root). Returns the
    /// verdict and the info to hand to this path's children.
    pub fn matches_using_parent_results(
        &self,
        rel_path: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let inherited = &parent.parent_matched;
        debug_assert!(inherited.is_empty() || inherited.len() == self.patterns.len());
        let prefixes = if inherited.is_empty() {
            let parent_dir = dir(rel_path);
            if parent_dir == "." {
                Vec::new()
            } else {
                parent_prefixes(&parent_dir)
            }
        } else {
            Vec::new()
        };
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut hit = inherited.get(index).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches_self_or_parent(rel_path, &prefixes);
            }
            info[index] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        (
            matched,
            MatchInfo {
                parent_matched: info,
            },
        )
    }

    /// Whether an excluded directory must still be walked because an exception names
    /// a path under it. This is moby's textual prefix test, not a real match: an
    /// exception like `!**/keep` does not rescue files under an excluded `dir`, in
    /// Docker as here.
    pub fn may_reinclude_below(&self, rel_dir: &str) -> bool {
        let dir_slash = format!("{rel_dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.cleaned).starts_with(&dir_slash))
    }

    /// fsutil's `FilterFS` prefix test: whether a pattern of the kind asked for (the `!`
    /// exceptions, or the plain patterns), minus a trailing `/**` or `/*`, names a path
    /// under `rel_dir`, so the directory must be walked for it.
    pub fn names_path_below(&self, rel_dir: &str, exceptions: bool) -> bool {
        let dir_slash = format!("{rel_dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion == exceptions)
            .any(|p| format!("{}/", without_trailing_glob(&p.cleaned)).starts_with(&dir_slash))
    }

    /// fsutil's `onlyPrefixIncludes` / `onlyPrefixExcludeExceptions`: whether every
    /// pattern of the kind asked for, minus a trailing glob, is a literal path, which is
    /// when [`Self::names_path_below`] may prune a directory.
    pub fn literal_prefixes_only(&self, exceptions: bool) -> bool {
        self.patterns
            .iter()
            .filter(|p| p.exclusion == exceptions)
            .all(|p| !without_trailing_glob(&p.cleaned).contains(['*', '[', ']', '?', '^', '\\']))
    }
}

fn without_trailing_glob(pattern: &str) -> &str {
    let pattern = pattern.strip_suffix("/**").unwrap_or(pattern);
    pattern.strip_suffix("/*").unwrap_or(pattern)
}

/// Go's `filepath.Match` of one name against a pattern; a malformed pattern matches
/// nothing, as Go's callers that ignore the error see it.
pub fn go_path_match(pattern: &str, name: &str) -> bool {
    go_match(pattern.as_bytes(), name.as_bytes()).unwrap_or(false)
}

/// `a/b/c` -> `["a", "a/b", "a/b/c"]`.
fn parent_prefixes(parent: &str) -> Vec<String> {
    let mut prefixes = Vec::new();
    for (index, _) in parent.match_indices('/') {
        prefixes.push(parent[..index].to_owned());
    }
    prefixes.push(parent.to_owned());
    prefixes
}

#[cfg(test)]
mod tests;
