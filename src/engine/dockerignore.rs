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

// ---------------------------------------------------------------------------------
// moby's compile(): pattern -> match kind (+ Go regexp), then Go regexp -> Rust regex.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// Characters moby escapes because they are regexp syntax but plain in filepath.Match.
fn should_escape(ch: char) -> bool {
    matches!(ch, '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$')
}

/// moby's `compile` with `/` as separator, returning the Go regexp text it builds.
fn compile_go(pattern: &str) -> (Kind, String) {
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut chars = pattern.chars().peekable();
    let mut index = 0;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`: eat the slash.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regexp;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regexp;
                }
                if index == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regexp;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regexp;
            }
            c if should_escape(c) => {
                re.push('\\');
                re.push(c);
            }
            '\\' => {
                re.push('\\');
                if let Some(next) = chars.next() {
                    re.push(next);
                    kind = Kind::Regexp;
                }
            }
            '[' | ']' => {
                re.push(ch);
                kind = Kind::Regexp;
            }
            c => re.push(c),
        }
        index += 1;
    }
    if kind == Kind::Regexp {
        re.push('$');
    }
    (kind, re)
}

fn compile(pattern: &str) -> Result<Matcher, String> {
    let (kind, go_regexp) = compile_go(pattern);
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix,
        Kind::Suffix => Matcher::Suffix,
        Kind::Regexp => {
            let rust = translate_go_regexp(&go_regexp)?;
            Matcher::Regexp(Regex::new(&rust).map_err(|e| e.to_string())?)
        }
    })
}

/// Rewrites the Go (RE2) regexp that `compile_go` builds into the same language for
/// the `regex` crate. They agree on everything moby emits except: a `[` inside a
/// class (nested class in Rust, a literal in Go), `&&`/`--`/`~~` inside a class
/// (set operations in Rust), a `]` outside a class, `\<`/`\>` (word boundaries in
/// Rust, literals in Go), and the Perl classes, which are ASCII in Go.
fn translate_go_regexp(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 16);
    let mut at = 0;
    while at < chars.len() {
        let ch = chars[at];
        at += 1;
        match ch {
            '\\' => {
                let escaped = *chars
                    .get(at)
                    .ok_or("trailing backslash at end of expression")?;
                at += 1;
                out.push_str(&translate_escape(escaped, false)?);
            }
            '[' => at = translate_class(&chars, at, &mut out)?,
            ']' => out.push_str(r"\]"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Translates the class starting after its `[` at `at`; returns the index after `]`.
fn translate_class(chars: &[char], mut at: usize, out: &mut String) -> Result<usize, String> {
    const MISSING: &str = "missing closing ]";
    out.push('[');
    if chars.get(at) == Some(&'^') {
        out.push('^');
        at += 1;
    }
    let mut first = true;
    loop {
        let ch = *chars.get(at).ok_or(MISSING)?;
        if ch == ']' && !first {
            out.push(']');
            return Ok(at + 1);
        }
        first = false;
        if let Some(end) = posix_class_end(chars, at) {
            out.extend(&chars[at..end]);
            at = end;
            continue;
        }
        let (low, next) = class_atom(chars, at)?;
        at = next;
        // `[a-]` is `a` or `-`: a dash before the closing bracket is no range.
        let is_range = chars.get(at) == Some(&'-') && chars.get(at + 1).is_some_and(|c| *c != ']');
        out.push_str(&low);
        if is_range {
            let (high, next) = class_atom(chars, at + 1)?;
            out.push('-');
            out.push_str(&high);
            at = next;
        }
    }
}

/// Go accepts `[:name:]` inside a class; Rust spells it the same way.
fn posix_class_end(chars: &[char], at: usize) -> Option<usize> {
    if chars.get(at) != Some(&'[') || chars.get(at + 1) != Some(&':') {
        return None;
    }
    (at + 2..chars.len().saturating_sub(1))
        .find(|&i| chars[i] == ':' && chars[i + 1] == ']')
        .map(|i| i + 2)
}

/// One class member (a char or an escape), in Rust syntax, and the index after it.
fn class_atom(chars: &[char], at: usize) -> Result<(String, usize), String> {
    let ch = *chars.get(at).ok_or("missing closing ]")?;
    if ch == '\\' {
        let escaped = *chars.get(at + 1).ok_or("missing closing ]")?;
        return Ok((translate_escape(escaped, true)?, at + 2));
    }
    Ok((escape_literal(ch), at + 1))
}

/// A literal char, escaped if Rust would read it as syntax anywhere.
fn escape_literal(ch: char) -> String {
    let mut buf = [0; 4];
    regex::escape(ch.encode_utf8(&mut buf))
}

/// Go's escape `\c`, in Rust syntax.
fn translate_escape(ch: char, in_class: bool) -> Result<String, String> {
    if !ch.is_ascii() {
        return Err(format!("invalid escape sequence: `\\{ch}`"));
    }
    if !ch.is_ascii_alphanumeric() {
        return Ok(escape_literal(ch));
    }
    let ascii_class = match ch {
        'd' => Some("0-9"),
        'w' => Some("0-9A-Za-z_"),
        's' => Some(r"\t\n\f\r "),
        _ => None,
    };
    Ok(match (ch, ascii_class, in_class) {
        (_, Some(class), true) => class.to_owned(),
        (_, Some(class), false) => format!("[{class}]"),
        ('D' | 'W' | 'S', _, false) => {
            let class = match ch {
                'D' => "0-9",
                'W' => "0-9A-Za-z_",
                _ => r"\t\n\f\r ",
            };
            format!("[^{class}]")
        }
        ('b' | 'B', _, false) => format!(r"(?-u:\{ch})"),
        _ => format!("\\{ch}"),
    })
}

// ---------------------------------------------------------------------------------
// Go's path/filepath.Match (Unix), used by moby only to reject bad patterns early.
// ---------------------------------------------------------------------------------

/// Why Go's `filepath.Match` says `syntax error in pattern`, in the user's terms.
const BAD_PATTERN: &str = "unclosed or malformed `[...]` class, or a trailing `\\`";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadPattern;

/// Port of `filepath.Match` on byte strings.
fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        if let Some(tail) = match_chunk(chunk, name)? {
            if tail.is_empty() || !pattern.is_empty() {
                name = tail;
                continue;
            }
        }
        if star {
            let mut skip = 0;
            while skip < name.len() && name[skip] != b'/' {
                if let Some(tail) = match_chunk(chunk, &name[skip + 1..])? {
                    if tail.is_empty() || !pattern.is_empty() {
                        name = tail;
                        continue 'pattern;
                    }
                }
                skip += 1;
            }
        }
        // Before failing, make sure the rest of the pattern is well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off leading stars and the literal chunk up to the next unbracketed star.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some(rest) = pattern.strip_prefix(b"*") {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut end = 0;
    while end < pattern.len() {
        match pattern[end] {
            b'\\' if end + 1 < pattern.len() => end += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        end += 1;
    }
    (star, &pattern[..end], &pattern[end..])
}

/// Matches one chunk at the start of `s`, returning the unmatched tail. Keeps
/// parsing after a mismatch so a malformed chunk is always reported.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut rune = 0;
                if !failed {
                    let (r, width) = decode_rune(s);
                    rune = r;
                    s = &s[width..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (low, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut high = low;
                    if chunk[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        high = h;
                        chunk = rest;
                    }
                    matched |= low <= rune && rune <= high;
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    failed = s[0] == b'/';
                    s = &s[decode_rune(s).1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    failed = chunk[0] != s[0];
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One (possibly escaped) character of a class range.
fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return Err(BadPattern);
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BadPattern);
        }
    }
    let (rune, width) = decode_rune(chunk);
    if rune == u32::from(char::REPLACEMENT_CHARACTER) && width == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[width..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((rune, rest))
}

/// Go's `utf8.DecodeRune`: an invalid byte decodes as U+FFFD of width 1.
fn decode_rune(bytes: &[u8]) -> (u32, usize) {
    let head = &bytes[..bytes.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) => std::str::from_utf8(&head[..err.valid_up_to()]).unwrap_or_default(),
    };
    match valid.chars().next() {
        Some(ch) => (u32::from(ch), ch.len_utf8()),
        None => (
            u32::from(char::REPLACEMENT_CHARACTER),
            usize::from(!bytes.is_empty()),
        ),
    }
}

#[cfg(test)]
mod tests;
