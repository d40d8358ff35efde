//! Golden fixtures: `fixtures/<family>/<case>.input.json` with `<case>.expected.leef` and
//! `<case>.expected.ecs.ndjson`, found by walking the directory, rendered with the default options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::MappingArgs;
use crate::mapping::{MapOptions, MappingSet};
use crate::translate::{Counts, Format, Translator};

#[derive(Args)]
pub struct ReplayArgs {
    /// Fixture directory.
    #[arg(default_value = "fixtures")]
    dir: PathBuf,
    /// Rewrite the expected files from the current mappings (review the diff before committing).
    #[arg(long)]
    bless: bool,
    #[command(flatten)]
    mappings: MappingArgs,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Fixture directory.
    #[arg(default_value = "fixtures")]
    dir: PathBuf,
    #[command(flatten)]
    mappings: MappingArgs,
}

/// One fixture case and what replaying it gives.
pub struct CaseResult {
    pub input: PathBuf,
    /// Family directory name.
    pub family_dir: String,
    pub leef: String,
    pub ecs: String,
    pub counts: Counts,
    pub decode_error: Option<String>,
}

/// Every `*.input.json` below `dir`, sorted.
pub fn find_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".input.json") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn expected_paths(input: &Path) -> (PathBuf, PathBuf) {
    let base = input.to_string_lossy();
    let stem = base.strip_suffix(".input.json").unwrap_or(&base);
    (
        PathBuf::from(format!("{stem}.expected.leef")),
        PathBuf::from(format!("{stem}.expected.ecs.ndjson")),
    )
}

/// Replays one case with the default render options.
pub fn replay_case(translator: &Translator, input: &Path) -> Result<CaseResult> {
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let origin: Arc<str> = Arc::from(input.display().to_string());
    let mut counts = Counts::default();
    let mut leef = Vec::new();
    let mut ecs = Vec::new();
    let mut decode_error = translator
        .text(
            &text,
            &origin,
            None,
            &[Format::Leef],
            &mut leef,
            &mut counts,
        )
        .err()
        .map(|e| e.to_string());
    let mut ecs_counts = Counts::default();
    if let Err(e) = translator.text(
        &text,
        &origin,
        None,
        &[Format::Ecs],
        &mut ecs,
        &mut ecs_counts,
    ) {
        decode_error.get_or_insert(e.to_string());
    }
    let family_dir = input
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(CaseResult {
        input: input.to_path_buf(),
        family_dir,
        leef: String::from_utf8_lossy(&leef).into_owned(),
        ecs: String::from_utf8_lossy(&ecs).into_owned(),
        counts,
        decode_error,
    })
}

/// A readable difference between expected and actual text, or `None` when they are equal.
pub fn diff(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x == y {
            continue;
        }
        shown += 1;
        if shown > 5 {
            out.push_str("  ... more differing lines\n");
            break;
        }
        let col = match (x, y) {
            (Some(x), Some(y)) => x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count() + 1,
            _ => 1,
        };
        out.push_str(&format!(
            "  line {} (first difference at column {col}):\n",
            i + 1
        ));
        out.push_str(&format!("    - {}\n", clip(x.unwrap_or("<no line>"), col)));
        out.push_str(&format!("    + {}\n", clip(y.unwrap_or("<no line>"), col)));
    }
    if out.is_empty() {
        out.push_str("  (line endings differ)\n");
    }
    Some(out)
}

/// Shows a window of a long line around the first difference.
fn clip(line: &str, col: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= 160 {
        return line.to_string();
    }
    let start = col.saturating_sub(60);
    let end = (start + 160).min(chars.len());
    let mut s: String = chars[start..end].iter().collect();
    if start > 0 {
        s.insert(0, '…');
    }
    if end < chars.len() {
        s.push('…');
    }
    s
}

fn translator(m: &MappingArgs) -> Result<Translator> {
    Ok(Translator::new(
        m.load()?,
        MapOptions::default(),
        Default::default(),
    ))
}

/// Compares every case; returns the problems found (empty = all equal).
pub(super) fn compare_all(
    translator: &Translator,
    cases: &[PathBuf],
    bless: bool,
) -> Result<(Vec<String>, Vec<CaseResult>)> {
    let mut problems = Vec::new();
    let mut results = Vec::new();
    for input in cases {
        let r = replay_case(translator, input)?;
        if let Some(e) = &r.decode_error {
            problems.push(format!("{}: input does not decode: {e}", input.display()));
        }
        let (leef_path, ecs_path) = expected_paths(input);
        for (path, actual) in [(&leef_path, &r.leef), (&ecs_path, &r.ecs)] {
            if bless {
                if std::fs::read_to_string(path).ok().as_deref() != Some(actual.as_str()) {
                    std::fs::write(path, actual)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("blessed {}", path.display());
                }
                continue;
            }
            match std::fs::read_to_string(path) {
                Ok(expected) => {
                    if let Some(d) = diff(&expected, actual) {
                        problems.push(format!(
                            "{} differs from the current output:\n{d}",
                            path.display()
                        ));
                    }
                }
                Err(_) => problems.push(format!(
                    "{} is missing (run `defender-dsm replay --bless`)",
                    path.display()
                )),
            }
        }
        results.push(r);
    }
    Ok((problems, results))
}

pub fn run_replay(a: ReplayArgs) -> Result<ExitCode> {
    let t = translator(&a.mappings)?;
    let cases = find_cases(&a.dir)?;
    let (problems, results) = compare_all(&t, &cases, a.bless)?;
    let records: u64 = results.iter().map(|r| r.counts.total()).sum();
    Ok(report(
        &problems,
        format!("replay: {} cases, {records} records", cases.len()),
    ))
}

/// Prints the problems and the summary line; exit 1 when there are problems.
fn report(problems: &[String], summary: String) -> ExitCode {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!("{summary}, {} problem(s)", problems.len());
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Replay without writing, plus coverage: every family has a case, every case maps fully
/// (cases named `unmapped-*` or `failed-*` are expected not to), and a case sits under the
/// directory of the family its records map to.
pub fn run_check(a: CheckArgs) -> Result<ExitCode> {
    let t = match translator(&a.mappings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("check: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let cases = find_cases(&a.dir)?;
    let (mut problems, results) = compare_all(&t, &cases, false)?;
    problems.extend(coverage(&t.mappings, &results));
    let summary = format!(
        "check: {} families, {} cases",
        t.mappings.families().len(),
        cases.len()
    );
    Ok(report(&problems, summary))
}

fn coverage(set: &MappingSet, results: &[CaseResult]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results {
        let name = r
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expect_unmapped = name.starts_with("unmapped") || name.starts_with("failed");
        if !expect_unmapped && (r.counts.unmapped > 0 || r.counts.failed > 0) {
            problems.push(format!(
                "{}: {} unmapped and {} failed records (name the case unmapped-* or failed-* if intended): {}",
                r.input.display(),
                r.counts.unmapped,
                r.counts.failed,
                r.counts.reasons.join("; ")
            ));
        }
        for fam in r.counts.by_family.keys() {
            if let Some(f) = set.families().iter().find(|f| &f.name == fam) {
                *seen.entry(f.name.as_str()).or_default() += 1;
            }
        }
        if !expect_unmapped && !r.counts.by_family.contains_key(&r.family_dir) {
            problems.push(format!(
                "{}: sits under `{}/` but its records map to {:?}",
                r.input.display(),
                r.family_dir,
                r.counts.by_family.keys().collect::<Vec<_>>()
            ));
        }
    }
    for f in set.families() {
        if !seen.contains_key(f.name.as_str()) {
            problems.push(format!(
                "family `{}` ({}) has no fixture case",
                f.name, f.file
            ));
        }
    }
    problems
}

/// The types the fixtures' expected ECS documents show, for index templates; nothing when the
/// directory is absent.
pub fn observed_types(dir: Option<&Path>) -> Result<crate::export::elastic::Observed> {
    let mut seen = crate::export::elastic::Observed::new();
    let Some(dir) = dir.filter(|d| d.is_dir()) else {
        return Ok(seen);
    };
    for input in find_cases(dir)? {
        let (_, ecs) = expected_paths(&input);
        let Ok(text) = std::fs::read_to_string(&ecs) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let doc: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", ecs.display(), i + 1))?;
            crate::export::elastic::observe(&doc, &mut seen);
        }
    }
    Ok(seen)
}
