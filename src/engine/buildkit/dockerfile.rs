//! Finds the Dockerfile line of a BuildKit step. BuildKit names a step's vertex
//! `[<stage> <n>/<total>] <INSTRUCTION> ...`, where the stage is its `AS` name, or
//! `stage-<index>` when unnamed in a multi-stage file, and is left out in a single-stage
//! file; `n` counts, within the stage, the `FROM` (unless `scratch` or another stage) and
//! each `ADD`, `COPY`, `RUN` and `WORKDIR`. This module reads the Dockerfile the same way
//! (continuations, comments, heredoc bodies) to turn that back into a line.

/// One instruction: its keyword (upper case), first line (1-based) and text after the
/// keyword with continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    pub keyword: String,
    pub line: u32,
    pub args: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stage {
    name: Option<String>,
    /// Lines of the counted steps, in order.
    steps: Vec<u32>,
}

/// A parsed Dockerfile, for mapping step names to lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerfileMap {
    instructions: Vec<Instruction>,
    stages: Vec<Stage>,
}

/// A parsed vertex name: `[build 2/5] RUN make`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepName<'a> {
    pub stage: Option<&'a str>,
    pub index: usize,
    pub total: usize,
    pub text: &'a str,
}

/// Parses `[<platform> <stage> <n>/<total>] <text>`; `None` for internal vertices such as
/// `[internal] load build context`.
pub(crate) fn parse_step_name(name: &str) -> Option<StepName<'_>> {
    let rest = name.strip_prefix('[')?;
    let (inside, text) = rest.split_once("] ")?;
    let mut words = inside.split_whitespace().rev();
    let (index, total) = words.next()?.split_once('/')?;
    let index = index.parse().ok()?;
    let total = total.parse().ok()?;
    // A platform may come first in multi-platform builds; the stage is the last word.
    let stage = words.next();
    Some(StepName {
        stage,
        index,
        total,
        text,
    })
}

impl DockerfileMap {
    pub fn parse(text: &str) -> Self {
        let instructions = parse_instructions(text);
        let mut stages: Vec<Stage> = Vec::new();
        for ins in &instructions {
            match ins.keyword.as_str() {
                "FROM" => {
                    let words: Vec<&str> = ins
                        .args
                        .split_whitespace()
                        .filter(|w| !w.starts_with("--"))
                        .collect();
                    let base = words
                        .first()
                        .copied()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let name = match words.as_slice() {
                        [_, as_word, name, ..] if as_word.eq_ignore_ascii_case("as") => {
                            Some(name.to_ascii_lowercase())
                        }
                        _ => None,
                    };
                    let from_stage = stages
                        .iter()
                        .any(|s| s.name.as_deref() == Some(base.as_str()));
                    let mut steps = Vec::new();
                    if base != "scratch" && !from_stage {
                        steps.push(ins.line);
                    }
                    stages.push(Stage { name, steps });
                }
                "ADD" | "COPY" | "RUN" | "WORKDIR" => {
                    if let Some(stage) = stages.last_mut() {
                        stage.steps.push(ins.line);
                    }
                }
                _ => {}
            }
        }
        Self {
            instructions,
            stages,
        }
    }

    /// The line of the step named `vertex_name`, when it can be told.
    pub fn line_of(&self, vertex_name: &str) -> Option<u32> {
        if let Some(reference) = vertex_name.strip_prefix("[internal] load metadata for ") {
            return self.line_of_base(reference);
        }
        let step = parse_step_name(vertex_name)?;
        self.line_by_index(&step)
            .or_else(|| self.line_by_text(step.text))
    }

    fn line_by_index(&self, step: &StepName<'_>) -> Option<u32> {
        let stage = match step.stage {
            Some(label) => {
                let label = label.to_ascii_lowercase();
                self.stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(label.as_str()))
                    .or_else(|| label.strip_prefix("stage-")?.parse().ok())
                    .and_then(|i| self.stages.get(i))?
            }
            None if self.stages.len() == 1 => &self.stages[0],
            // No label: the one stage whose step count fits.
            None => {
                let mut fitting = self.stages.iter().filter(|s| s.steps.len() == step.total);
                let first = fitting.next()?;
                if fitting.next().is_some() {
                    return None;
                }
                first
            }
        };
        if stage.steps.len() != step.total {
            return None;
        }
        stage.steps.get(step.index.checked_sub(1)?).copied()
    }

    /// The `FROM` naming `reference` (a base image that could not be resolved), if one does.
    fn line_of_base(&self, reference: &str) -> Option<u32> {
        let wanted = normalize_reference(reference);
        self.instructions
            .iter()
            .filter(|i| i.keyword == "FROM")
            .find(|i| {
                i.args
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .is_some_and(|image| normalize_reference(image) == wanted)
            })
            .map(|i| i.line)
    }

    /// Falls back to the instruction whose text is the step's, if exactly one is.
    fn line_by_text(&self, text: &str) -> Option<u32> {
        let wanted = squash(text);
        let mut found = self
            .instructions
            .iter()
            .filter(|i| squash(&format!("{} {}", i.keyword, i.args)) == wanted);
        let first = found.next()?;
        found.next().is_none().then_some(first.line)
    }
}

/// `busybox` and `docker.io/library/busybox:latest` are the same image.
fn normalize_reference(reference: &str) -> String {
    let mut name = reference.to_ascii_lowercase();
    for prefix in ["docker.io/library/", "docker.io/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest.to_string();
            break;
        }
    }
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        name.push_str(":latest");
    }
    name
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The images the `FROM` lines name, read as BuildKit reads the file (continuations, the
/// escape directive, comments, heredoc bodies); images named by variables are left out.
/// Stage names come back too: callers keep the images of the registry they know.
pub fn base_images(text: &str) -> Vec<String> {
    parse_instructions(text)
        .into_iter()
        .filter(|ins| ins.keyword == "FROM")
        .filter_map(|ins| {
            let image = ins.args.split_whitespace().find(|w| !w.starts_with("--"))?;
            (!image.contains('$')).then(|| image.to_string())
        })
        .collect()
}

/// The images the `FROM` lines pull ([`base_images`] without earlier stages' names and
/// `scratch`), each once, in order.
pub fn pulled_images(text: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    for ins in parse_instructions(text)
        .into_iter()
        .filter(|ins| ins.keyword == "FROM")
    {
        let words: Vec<&str> = ins
            .args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        if let [image, rest @ ..] = words.as_slice() {
            let lower = image.to_ascii_lowercase();
            if !image.contains('$')
                && lower != "scratch"
                && !stages.contains(&lower)
                && !images.iter().any(|i| i == image)
            {
                images.push((*image).to_string());
            }
            if let [as_word, name, ..] = rest {
                if as_word.eq_ignore_ascii_case("as") {
                    stages.push(name.to_ascii_lowercase());
                }
            }
        }
    }
    images
}

/// Splits a Dockerfile into instructions, honouring the `escape` directive, continuation
/// lines, comments and heredoc bodies.
pub(crate) fn parse_instructions(text: &str) -> Vec<Instruction> {
    let lines: Vec<&str> = text.lines().collect();
    let escape = escape_directive(&lines);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let mut logical = String::new();
        loop {
            let line = lines[i].trim_end();
            let stripped = line.trim_start();
            let is_comment = i != start && stripped.starts_with('#');
            if !is_comment {
                if let Some(body) = line.strip_suffix(escape) {
                    logical.push_str(body);
                    logical.push(' ');
                    i += 1;
                    if i < lines.len() {
                        continue;
                    }
                    break;
                }
                logical.push_str(line);
            }
            i += 1;
            if is_comment && i < lines.len() {
                continue;
            }
            break;
        }
        let logical = logical.trim();
        let (keyword, args) = logical
            .split_once(char::is_whitespace)
            .unwrap_or((logical, ""));
        let keyword = keyword.to_ascii_uppercase();
        // Heredoc bodies follow the instruction line and are not instructions.
        if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (word, strip_tabs) in heredoc_words(args) {
                while i < lines.len() {
                    let line = lines[i];
                    i += 1;
                    let candidate = if strip_tabs {
                        line.trim_start_matches('\t')
                    } else {
                        line
                    };
                    if candidate == word {
                        break;
                    }
                }
            }
        }
        out.push(Instruction {
            keyword,
            line: u32::try_from(start + 1).unwrap_or(u32::MAX),
            args: args.trim().to_string(),
        });
    }
    out
}

fn escape_directive(lines: &[&str]) -> char {
    for line in lines {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        if let Some((key, value)) = directive.split_once('=') {
            if key.trim().eq_ignore_ascii_case("escape") {
                if let Some(c) = value.trim().chars().next() {
                    return c;
                }
            }
        } else {
            break;
        }
    }
    '\\'
}

/// The heredoc delimiters of an instruction, in order: `<<EOF`, `<<-EOF`, `<<"EOF"`.
fn heredoc_words(args: &str) -> Vec<(String, bool)> {
    let mut words = Vec::new();
    let mut rest = args;
    while let Some(pos) = rest.find("<<") {
        rest = &rest[pos + 2..];
        let strip_tabs = rest.starts_with('-');
        let after = rest.trim_start_matches('-');
        let after = after.trim_start_matches(['"', '\'']);
        let word: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            words.push((word, strip_tabs));
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = "\
# a comment
FROM local/busybox:latest AS base
RUN echo one \\
  two
COPY <<EOF /greeting
hello
RUN not an instruction
EOF
RUN <<EOT
  echo in heredoc
EOT
ENV A=b

FROM scratch
COPY --from=base /greeting /g

FROM base AS final
WORKDIR /app
RUN exit 3
";

    #[test]
    fn instructions_skip_heredoc_bodies_and_continuations() {
        let lines: Vec<(String, u32)> = parse_instructions(MULTI)
            .into_iter()
            .map(|i| (i.keyword, i.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("FROM".into(), 2),
                ("RUN".into(), 3),
                ("COPY".into(), 5),
                ("RUN".into(), 9),
                ("ENV".into(), 12),
                ("FROM".into(), 14),
                ("COPY".into(), 15),
                ("FROM".into(), 17),
                ("WORKDIR".into(), 18),
                ("RUN".into(), 19),
            ]
        );
    }

    #[test]
    fn step_names_map_to_lines() {
        let map = DockerfileMap::parse(MULTI);
        assert_eq!(
            map.line_of("[base 1/4] FROM docker.io/local/busybox:latest"),
            Some(2)
        );
        assert_eq!(map.line_of("[base 4/4] RUN <<EOT"), Some(9));
        assert_eq!(
            map.line_of("[stage-1 1/1] COPY --from=base /greeting /g"),
            Some(15)
        );
        assert_eq!(map.line_of("[final 2/2] RUN exit 3"), Some(19));
        assert_eq!(map.line_of("[internal] load build context"), None);
        assert_eq!(
            map.line_of("[internal] load metadata for docker.io/local/busybox:latest"),
            Some(2)
        );
        let single = DockerfileMap::parse("FROM a\nRUN x\n\nRUN  y   z\n");
        assert_eq!(single.line_of("[3/3] RUN y z"), Some(4));
        assert_eq!(single.line_of("[ 3/3] RUN y z"), Some(4));
    }

    #[test]
    fn step_names_parse() {
        let step = parse_step_name("[linux/arm64 build 2/5] RUN make").unwrap();
        assert_eq!(step.stage, Some("build"));
        assert_eq!((step.index, step.total), (2, 5));
        assert_eq!(step.text, "RUN make");
        assert!(parse_step_name("[internal] load metadata").is_none());
    }

    /// `FROM` lines with flags, stage names, continuations and comments give their image;
    /// images named by variables and heredoc lines are left out.
    #[test]
    fn pulled_images_leave_out_stages_and_scratch() {
        let dockerfile = "FROM golang:1.22 AS build\nFROM build AS test\nFROM scratch\n\
                          FROM alpine:3.20\nFROM golang:1.22\n";
        assert_eq!(pulled_images(dockerfile), ["golang:1.22", "alpine:3.20"]);
    }

    #[test]
    fn from_lines_name_their_images() {
        let dockerfile = "# syntax=docker/dockerfile:1\n\
            ARG BASE=x\n\
            FROM --platform=$BUILDPLATFORM 1.dkr.ecr.r.amazonaws.com/base:1 AS build\n\
            from \\\n  golang:1.22\n\
            FROM ${BASE}\n\
            FROM build\n\
            RUN echo FROM nothing\n\
            RUN <<EOF\nFROM a-heredoc-line\nEOF\n";
        assert_eq!(
            base_images(dockerfile),
            ["1.dkr.ecr.r.amazonaws.com/base:1", "golang:1.22", "build"]
        );
    }
}
