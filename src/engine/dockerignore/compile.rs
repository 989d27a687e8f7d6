//! moby's pattern compiler (`compile()`: a pattern to a match kind and a Go regexp, then
//! the Go regexp to a Rust regex) and Go's `filepath.Match`, which a `.dockerignore`
//! line must pass first.

use regex::Regex;

use super::Matcher;

// ---------------------------------------------------------------------------------
// moby's compile(): pattern -> match kind (+ Go regexp), then Go regexp -> Rust regex.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) fn compile_go(pattern: &str) -> (Kind, String) {
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

pub(super) fn compile(pattern: &str) -> Result<Matcher, String> {
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
pub(super) const BAD_PATTERN: &str = "unclosed or malformed `[...]` class, or a trailing `\\`";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BadPattern;

/// Port of `filepath.Match` on byte strings.
pub(super) fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
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
