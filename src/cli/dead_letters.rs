//! `replay-dead-letters`: the events outputs refused for good, translated again with the
//! current mappings and sent to the output that refused each.
//!
//! Each dead-letter file is first renamed to `*.replaying`, so that letters refused again land
//! in a fresh file and a crash mid-way leaves the rest to the next replay (at least once; the
//! record ids keep a second delivery harmless). Letters for an output not given on this
//! command line stay where they were.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::outputs::{OutputArgs, Outputs};
use super::translate::exit_code;
use super::{MappingArgs, RenderArgs};
use crate::mapping::MapOptions;
use crate::output::dead_letter;
use crate::translate::{Counts, Translator};

#[derive(Args)]
pub struct ReplayDeadLettersArgs {
    #[command(flatten)]
    mappings: MappingArgs,
    #[command(flatten)]
    render: RenderArgs,
    /// The outputs, as given to `translate` (with the same --data-dir).
    #[command(flatten)]
    outputs: OutputArgs,
}

pub fn run(a: ReplayDeadLettersArgs) -> Result<ExitCode> {
    let data_dir = a
        .outputs
        .data_dir()
        .context("--data-dir: the directory the dead letters are in")?;
    let dir = data_dir.join("dead-letters");
    let files = claim(&dir)?;
    if files.is_empty() {
        eprintln!("replay-dead-letters: none in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let translator = Translator::new(
        a.mappings.load()?,
        MapOptions::default(),
        a.render.options()?,
    );
    let mut outputs = Outputs::open(
        &a.outputs,
        translator.render.clone(),
        translator.mappings.version(),
    )?;
    let names: Vec<String> = outputs.names().map(str::to_string).collect();
    let mut counts = Counts::default();
    let (mut sent, mut kept) = (0, 0);
    let mut failed = false;
    for file in &files {
        let letters = dead_letter::read(file)?;
        let mut keep = Vec::new();
        for letter in letters {
            if !names.contains(&letter.output) {
                keep.push(letter.line);
                continue;
            }
            let origin: Arc<str> = Arc::from(letter.place.as_str());
            let result = translator.each_event(
                &letter.record,
                &origin,
                letter.source,
                &mut counts,
                |rec, ev| outputs.add(ev, rec, Some(&letter.output)),
            );
            if let Err(e) = result {
                eprintln!("{}: {e}", letter.place);
                keep.push(letter.line);
                failed = true;
            } else {
                sent += 1;
            }
        }
        outputs.commit()?;
        kept += keep.len();
        put_back(file, &keep)?;
    }
    let reports = outputs.close();
    eprintln!("replay-dead-letters: {sent} letters translated and handed to their outputs, {kept} kept for outputs not given here");
    eprintln!("translate: {}", counts.summary());
    for r in &reports {
        eprintln!("output {}", r.line());
    }
    Ok(exit_code(failed, &reports))
}

/// The files to replay: those a crashed replay left, and every dead-letter file renamed.
fn claim(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("{}", dir.display()))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".ndjson.replaying") {
            files.push(path);
        } else if name.ends_with(".ndjson") {
            // A leftover of the same output: append, so that neither is lost.
            let to = path.with_extension("ndjson.replaying");
            if to.exists() {
                let text = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&to)
                    .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_data()))
                    .with_context(|| format!("{}", to.display()))?;
                std::fs::remove_file(&path).with_context(|| format!("{}", path.display()))?;
            } else {
                std::fs::rename(&path, &to).with_context(|| format!("{}", path.display()))?;
                files.push(to);
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Letters not replayed go back to their output's file; the claimed file goes.
fn put_back(claimed: &Path, keep: &[String]) -> Result<()> {
    if !keep.is_empty() {
        let name = claimed.to_string_lossy();
        let back = PathBuf::from(name.trim_end_matches(".replaying"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&back)
            .with_context(|| format!("{}", back.display()))?;
        for line in keep {
            writeln!(f, "{line}").with_context(|| format!("{}", back.display()))?;
        }
        f.sync_data()
            .with_context(|| format!("{}", back.display()))?;
    }
    std::fs::remove_file(claimed).with_context(|| format!("{}", claimed.display()))
}
