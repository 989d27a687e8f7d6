use super::*;

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns.iter().map(|p| IgnoreLine::synthetic(*p)))
        .unwrap_or_else(|e| panic!("{patterns:?} should compile: {e}"))
}

fn patterns_of(content: &str) -> Vec<String> {
    read_all(content.as_bytes())
        .into_iter()
        .map(|l| l.pattern)
        .collect()
}

/// moby's `TestMatches` table, checked through `MatchesOrParentMatches` (where both
/// `exact` and `inexact` cases match), plus its multi-pattern cases.
#[test]
fn moby_test_matches_table_agrees_with_matches_or_parent_matches() {
    let single: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "/", true),
        ("**/", "/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("a\\\\", "a\\", true),
        ("a\\*b", "a*b", true),
    ];
    for (pattern, path, expected) in single {
        assert_eq!(
            matcher(&[pattern]).is_excluded(path),
            *expected,
            "pattern {pattern:?} path {path:?}"
        );
    }
    let multi: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
    ];
    for (patterns, path, expected) in multi {
        assert_eq!(
            matcher(patterns).is_excluded(path),
            *expected,
            "patterns {patterns:?} path {path:?}"
        );
    }
}

/// The same table through `MatchesUsingParentResults` fed from the parents down, as
/// Docker's tar walk does, gives the same answers.
#[test]
fn parent_results_walk_agrees_with_moby_table() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["**/dir"], "dir/file", true),
        (&["**/dir2/*"], "dir/dir2/file/", true),
        (&["dir/**"], "dir/dir2/file", true),
        (&["a/*.txt"], "a/dir/file.txt", false),
        (&["abc/**"], "abc", false),
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
    ];
    for (patterns, path, expected) in cases {
        let m = matcher(patterns);
        let parent = dir(path);
        let mut info = MatchInfo::default();
        if parent != "." {
            for prefix in parent_prefixes(&parent) {
                info = m.matches_using_parent_results(&prefix, &info).1;
            }
        }
        let (excluded, _) = m.matches_using_parent_results(path, &info);
        assert_eq!(excluded, *expected, "patterns {patterns:?} path {path:?}");
    }
}

/// A pattern skipped for the parent is not re-tested against the parent for the
/// child in Docker's tar walk, which makes it differ from `MatchesOrParentMatches`.
#[test]
fn parent_results_skip_exception_that_only_matches_the_parent_like_moby() {
    let m = matcher(&["*/x", "!a"]);
    let (_, info) = m.matches_using_parent_results("a", &MatchInfo::default());
    assert!(m.matches_using_parent_results("a/x", &info).0);
    assert!(!m.is_excluded("a/x"));
}

/// moby's `TestCompile` table: which match kind each pattern gets, and the Go
/// regexp text for the regexp kind.
#[test]
fn compile_assigns_moby_match_kinds_and_regexps() {
    let cases: &[(&str, Kind, &str)] = &[
        ("*", Kind::Regexp, r"^[^/]*$"),
        ("file*", Kind::Regexp, r"^file[^/]*$"),
        ("*file", Kind::Regexp, r"^[^/]*file$"),
        ("a*/b", Kind::Regexp, r"^a[^/]*/b$"),
        ("**", Kind::Suffix, ""),
        ("**/**", Kind::Regexp, r"^(.*/)?.*$"),
        ("dir/**", Kind::Prefix, ""),
        ("**/dir", Kind::Suffix, ""),
        ("**/dir2/*", Kind::Regexp, r"^(.*/)?dir2/[^/]*$"),
        ("**/dir2/**", Kind::Regexp, r"^(.*/)?dir2/.*$"),
        ("**file", Kind::Suffix, ""),
        ("**/file*txt", Kind::Regexp, r"^(.*/)?file[^/]*txt$"),
        ("**/**/*.txt", Kind::Regexp, r"^(.*/)?(.*/)?[^/]*\.txt$"),
        ("a[b-d]e", Kind::Regexp, r"^a[b-d]e$"),
        (".*", Kind::Regexp, r"^\.[^/]*$"),
        ("abc.def", Kind::Exact, ""),
        ("abc?def", Kind::Regexp, r"^abc[^/]def$"),
        ("**/foo/bar", Kind::Suffix, ""),
        ("a(b)c/def", Kind::Exact, ""),
        ("a.|)$(}+{bc", Kind::Exact, ""),
    ];
    for (pattern, kind, regexp) in cases {
        let (got_kind, got_regexp) = compile_go(&clean(pattern));
        assert_eq!(got_kind, *kind, "{pattern}");
        if *kind == Kind::Regexp {
            assert_eq!(got_regexp, *regexp, "{pattern}");
        }
    }
}

/// moby's `TestMatch` table (borrowed from Go's filepath tests): single-level
/// matches and which patterns are rejected as bad syntax.
#[test]
fn go_filepath_match_table_matches_and_rejects_like_moby() {
    let cases: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[-x]", "x", None),
        ("\\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("a[", "ab", None),
        ("*x", "xxx", Some(true)),
    ];
    for (pattern, path, expected) in cases {
        let result = PatternMatcher::new([IgnoreLine::synthetic(*pattern)]);
        match expected {
            Some(excluded) => {
                let m = result.unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
                assert_eq!(
                    m.is_excluded(path),
                    *excluded,
                    "pattern {pattern:?} path {path:?}"
                );
            }
            None => assert!(
                matches!(result, Err(DockerignoreError::Syntax { .. })),
                "pattern {pattern:?} should be rejected"
            ),
        }
    }
}

/// A pattern naming a directory excludes everything below it.
#[test]
fn directory_pattern_excludes_nested_files() {
    let m = matcher(&["dir"]);
    assert!(m.is_excluded("dir"));
    assert!(m.is_excluded("dir/sub/file"));
    assert!(!m.is_excluded("dirt/file"));
    assert!(!m.is_excluded("other/dir"));
}

/// `*.md` then `!README.md` keeps README.md only, and a later pattern wins again.
#[test]
fn exception_then_later_pattern_last_match_wins() {
    let m = matcher(&["*.md", "!README.md"]);
    assert!(m.is_excluded("CHANGES.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(!m.is_excluded("docs/x.md"), "`*` does not cross `/`");
    let m = matcher(&["*.md", "!README.md", "README*"]);
    assert!(m.is_excluded("README.md"));
    let m = matcher(&["!README.md", "*.md"]);
    assert!(
        m.is_excluded("README.md"),
        "an exception before the rule is overridden"
    );
}

/// A folder pattern with an exception for a file in it (moby's folder tests).
#[test]
fn folder_pattern_with_file_exception_keeps_the_file() {
    for folder in ["docs", "docs/", "docs/*"] {
        let m = PatternMatcher::parse(format!("{folder}\n!docs/README.md\n").as_bytes()).unwrap();
        assert!(!m.is_excluded("docs/README.md"), "{folder}");
        assert!(m.is_excluded("docs/other.md"), "{folder}");
        assert!(m.has_exclusions());
    }
}

/// Leading `/` and `./` and `..` segments are normalised away as Docker does.
#[test]
fn leading_slash_and_dot_segments_are_normalised() {
    let m = PatternMatcher::parse(b"/abs\n./rel\nx/../y\n").unwrap();
    assert!(m.is_excluded("abs"));
    assert!(m.is_excluded("rel/file"));
    assert!(m.is_excluded("y"));
    assert!(!m.is_excluded("x"));
    assert_eq!(patterns_of("/\n..\n!./a/\n"), ["/", "..", "!a"]);
}

/// moby's ignorefile `TestReadAll` content, line for line.
#[test]
fn read_all_matches_moby_ignorefile_test() {
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(
        patterns_of(content),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!"
        ]
    );
}

/// Comments count only in column one; blank lines, a BOM and CRLF endings are
/// handled; line numbers are those of the file.
#[test]
fn comments_blank_lines_bom_and_crlf_keep_file_line_numbers() {
    let lines =
        read_all(b"\xEF\xBB\xBFfirst\r\n\r\n# comment\r\n  # not a comment\r\n\t*.log \r\n");
    assert_eq!(
        lines,
        [
            IgnoreLine {
                line: 1,
                pattern: "first".into()
            },
            IgnoreLine {
                line: 4,
                pattern: "# not a comment".into()
            },
            IgnoreLine {
                line: 5,
                pattern: "*.log".into()
            },
        ]
    );
    let m = PatternMatcher::new(lines).unwrap();
    assert!(m.is_excluded("first"));
    assert!(m.is_excluded("a.log"));
    assert!(!m.is_excluded("\u{FEFF}first"));
}

/// A lone `!` (even `! ` with trailing space) is rejected with its line number.
#[test]
fn illegal_exclusion_reports_line_number() {
    let err = PatternMatcher::parse(b"ok\n# c\n! \n").unwrap_err();
    assert_eq!(err, DockerignoreError::IllegalExclusion { line: 3 });
    assert_eq!(err.to_string(), "line 3: illegal exclusion pattern: \"!\"");
}

/// An unclosed `[` is a syntax error naming the pattern and its line.
#[test]
fn unclosed_bracket_reports_pattern_and_line() {
    let err = PatternMatcher::parse(b"a\nb\nsrc/[abc\n").unwrap_err();
    assert!(
        matches!(err, DockerignoreError::Syntax { line: 3, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("line 3: syntax error in pattern \"src/[abc\""),
        "{message}"
    );
}

/// A pattern Go's filepath.Match accepts but Go's regexp rejects (a reversed
/// range, moby issue 52203) still fails, up front rather than mid-walk.
#[test]
fn reversed_range_passes_match_validation_but_fails_compile() {
    assert_eq!(go_match(b"[Local-Only]", b"."), Ok(false));
    let err = PatternMatcher::parse(b"[Local-Only]/\n").unwrap_err();
    assert!(
        matches!(err, DockerignoreError::Syntax { line: 1, .. }),
        "{err}"
    );
}

/// Class contents that are syntax in Rust's regex but literal in Go's are
/// translated so they still match literally.
#[test]
fn class_members_special_in_rust_stay_literal() {
    let m = matcher(&["a[[&~]b"]);
    assert!(m.is_excluded("a[b"));
    assert!(m.is_excluded("a&b"));
    assert!(m.is_excluded("a~b"));
    assert!(!m.is_excluded("a]b"));
    let m = matcher(&["x[a&&b]"]);
    assert!(m.is_excluded("x&"));
    let m = matcher(&["q\\<"]);
    assert!(m.is_excluded("q<"));
    let m = matcher(&["e]*"]);
    assert!(m.is_excluded("e]f"));
}

/// moby sends `\d` through to Go's regexp, where it means an ASCII digit.
#[test]
fn backslash_d_means_ascii_digit_like_go() {
    let m = matcher(&["log\\d"]);
    assert!(m.is_excluded("log7"));
    assert!(!m.is_excluded("logd"));
    assert!(!m.is_excluded("log٣"));
}

/// moby quirks kept on purpose: `**file` is a bare suffix and `dir**` a bare prefix.
#[test]
fn double_star_suffix_and_prefix_quirks_are_kept() {
    assert!(matcher(&["**file"]).is_excluded("a/myfile"));
    assert!(matcher(&["dir**"]).is_excluded("directory/x"));
    assert!(!matcher(&["abc/**"]).is_excluded("abc"));
}

/// `**/` in the middle matches zero or more directories.
#[test]
fn double_star_slash_in_middle_matches_zero_or_more_dirs() {
    let m = matcher(&["a/**/b"]);
    assert!(m.is_excluded("a/b"));
    assert!(m.is_excluded("a/x/b"));
    assert!(m.is_excluded("a/x/y/b"));
    assert!(!m.is_excluded("a/xb"));
    let m = matcher(&["**/*.go"]);
    assert!(m.is_excluded("main.go"));
    assert!(m.is_excluded("cmd/x/main.go"));
    assert!(!m.is_excluded("main.gox"));
}

/// Non-UTF-8 bytes decode one U+FFFD per byte, so `?` eats one byte as in Go.
#[test]
fn non_utf8_bytes_count_as_one_rune_each() {
    assert_eq!(go_lossy(b"a\xE2\x82b"), "a\u{FFFD}\u{FFFD}b");
    let m = matcher(&["a??b"]);
    assert!(m.is_excluded(&go_lossy(b"a\xE2\x82b")));
}

/// Only exceptions naming a path under an excluded directory make the walker
/// descend into it, by moby's textual prefix rule.
#[test]
fn may_reinclude_below_uses_moby_prefix_rule() {
    let m = matcher(&["build", "!build/keep.txt", "!**/other"]);
    assert!(m.may_reinclude_below("build"));
    assert!(!m.may_reinclude_below("bui"));
    assert!(!m.may_reinclude_below("node_modules"));
    assert!(!matcher(&["build"]).has_exclusions());
}

/// Go's path.Clean and filepath.Dir, as used by moby.
#[test]
fn clean_and_dir_follow_go() {
    for (input, expected) in [
        ("", "."),
        ("./a", "a"),
        ("a/../b", "b"),
        ("/", "/"),
        ("..", ".."),
        ("a/../..", ".."),
        ("/../x", "/x"),
        ("a//b/", "a/b"),
    ] {
        assert_eq!(clean(input), expected, "{input}");
    }
    assert_eq!(dir("a/b/c"), "a/b");
    assert_eq!(dir("file/"), "file");
    assert_eq!(dir("a"), ".");
}
