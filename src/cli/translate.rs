use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::outputs::{OutputArgs, Outputs};
use super::{MappingArgs, RenderArgs};
use crate::event::SourceKind;
use crate::mapping::geo::GeoDb;
use crate::mapping::MapOptions;
use crate::output::file::{FileOutput, FileTarget};
use crate::output::worker::OutputReport;
use crate::translate::{Counts, Format, Translator};

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Leef,
    Ecs,
}

#[derive(Args)]
pub struct TranslateArgs {
    /// Source kind: auto (from the payload's shape), eventhub, graph-alert, graph-incident,
    /// mde-alert, siem-alert, mde-vulnerability.
    #[arg(long, default_value = "auto")]
    source: String,
    /// Output: leef (syslog header + LEEF per line) or ecs (one JSON document per line).
    #[arg(long, value_enum, default_value = "leef")]
    format: FormatArg,
    /// Put the raw record in ECS event.original.
    #[arg(long)]
    original: bool,
    /// GeoIP City (or Country) database (MaxMind `.mmdb`) for the addresses mappings mark with
    /// `<geo>`: ECS `*.geo.*`.
    #[arg(long, value_name = "MMDB")]
    geoip_city: Option<PathBuf>,
    /// GeoIP ASN database (MaxMind `.mmdb`): ECS `*.as.*`.
    #[arg(long, value_name = "MMDB")]
    geoip_asn: Option<PathBuf>,
    /// With a GeoIP database: LEEF keys with each enriched address's country (srcCountry,
    /// dstCountry, clientCountry, hostCountry).
    #[arg(long)]
    geoip_leef: bool,
    /// Keep the m365_defender.* copies of columns also mapped to ECS core fields (Elastic's
    /// `preserve_duplicate_custom_fields` tag; off by default, as in Elastic's pipelines).
    #[arg(long)]
    preserve_duplicate_custom_fields: bool,
    #[command(flatten)]
    mappings: MappingArgs,
    #[command(flatten)]
    render: RenderArgs,
    #[command(flatten)]
    outputs: OutputArgs,
    /// Write the events (in --format) to this file instead of stdout, rotating it by size.
    #[arg(long, value_name = "PATH")]
    out_file: Option<PathBuf>,
    /// With --out-file: rotate before the file would grow past this many bytes (0: never).
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    rotate_bytes: u64,
    /// With --out-file: rotated files to keep (PATH.1 is the newest).
    #[arg(long, default_value_t = 5)]
    keep_files: u32,
    /// Input files; `-` or none for stdin.
    files: Vec<PathBuf>,
}

/// `--source`: `auto` or a source kind.
pub(super) fn parse_source(arg: &str) -> Result<Option<SourceKind>> {
    match arg {
        "auto" => Ok(None),
        s => Ok(Some(
            s.parse::<SourceKind>()
                .map_err(anyhow::Error::msg)
                .context("--source")?,
        )),
    }
}

pub fn run(a: TranslateArgs) -> Result<ExitCode> {
    let forced = parse_source(&a.source)?;
    let translator = Translator::new(
        a.mappings.load()?,
        MapOptions {
            include_original: a.original,
            preserve_duplicates: a.preserve_duplicate_custom_fields,
            geo: load_geo(a.geoip_city.as_deref(), a.geoip_asn.as_deref())?,
            geo_leef: a.geoip_leef,
        },
        a.render.options()?,
    );
    let format = match a.format {
        FormatArg::Leef => Format::Leef,
        FormatArg::Ecs => Format::Ecs,
    };
    if a.outputs.enabled() {
        return send(&translator, forced, &a.outputs, a.files);
    }
    if let Some(path) = a.out_file {
        let target = FileTarget {
            path,
            max_bytes: a.rotate_bytes,
            keep: a.keep_files,
        };
        return write_file(&translator, forced, format, target, a.files);
    }
    let stdout = std::io::stdout();
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut counts = Counts::default();
    let mut out = Vec::with_capacity(1 << 16);
    let failed = each_input(a.files, |origin, text| {
        // The first write error stops the output.
        let mut write_error = None;
        let result = translator.text_flushing(
            text,
            origin,
            forced,
            &[format],
            &mut out,
            &mut counts,
            |buf| {
                if write_error.is_none() {
                    write_error = stdout.write_all(buf).err();
                }
                buf.clear();
            },
        );
        if let Some(e) = write_error {
            return Err(e).context("writing to stdout");
        }
        stdout.write_all(&out).context("writing to stdout")?;
        out.clear();
        Ok(result.map_err(|e| e.to_string()))
    })?;
    stdout.flush().context("writing to stdout")?;
    eprintln!("translate: {}", counts.summary());
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The GeoIP databases named on the command line or in the config, read now, so that a missing
/// or unreadable file stops the start naming it.
pub(super) fn load_geo(
    city: Option<&std::path::Path>,
    asn: Option<&std::path::Path>,
) -> Result<Option<Arc<GeoDb>>> {
    if city.is_none() && asn.is_none() {
        return Ok(None);
    }
    let read = |p: Option<&std::path::Path>| -> Result<Option<Vec<u8>>> {
        p.map(|p| std::fs::read(p).with_context(|| format!("GeoIP database {}", p.display())))
            .transpose()
    };
    let db = GeoDb::from_bytes(read(city)?, read(asn)?).map_err(|e| {
        anyhow::anyhow!(
            "{e} ({})",
            [city, asn]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok(Some(Arc::new(db)))
}

/// `translate --syslog/--bulk ...`: every event to every output; an input is taken once each
/// output has all its events sent or spooled.
fn send(
    translator: &Translator,
    forced: Option<SourceKind>,
    args: &OutputArgs,
    files: Vec<PathBuf>,
) -> Result<ExitCode> {
    let mut outputs = Outputs::open(
        args,
        translator.render.clone(),
        translator.mappings.version(),
    )?;
    let mut counts = Counts::default();
    let failed = each_input(files, |origin, text| {
        let result = translator.each_event(text, origin, forced, &mut counts, |rec, ev| {
            outputs.add(ev, rec, None)
        });
        outputs.commit()?;
        Ok(result.map_err(|e| e.to_string()))
    });
    let reports = outputs.close();
    eprintln!("translate: {}", counts.summary());
    for r in &reports {
        eprintln!("output {}", r.line());
    }
    let failed = failed?;
    Ok(exit_code(failed, &reports))
}

/// 2: an input or event failed (dead letters were written); 3: everything was accepted and is
/// safe in the spool, but not every output has it yet.
pub(super) fn exit_code(failed: bool, reports: &[OutputReport]) -> ExitCode {
    if failed || reports.iter().any(|r| r.dead_lettered > 0) {
        ExitCode::from(2)
    } else if reports.iter().any(|r| r.pending > 0) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// `translate --out-file PATH`: the events as lines in a size-rotated file.
fn write_file(
    translator: &Translator,
    forced: Option<SourceKind>,
    format: Format,
    target: FileTarget,
    files: Vec<PathBuf>,
) -> Result<ExitCode> {
    let mut file = FileOutput::open(target)?;
    let mut counts = Counts::default();
    let mut line = Vec::with_capacity(4096);
    let mut write_error = None;
    let failed = each_input(files, |origin, text| {
        let result = translator.each_event(text, origin, forced, &mut counts, |_, ev| {
            if write_error.is_some() {
                return;
            }
            line.clear();
            translator.render(ev, format, &mut line);
            if let Err(e) = file.write_line(&line) {
                write_error = Some(e);
            }
        });
        if let Some(e) = write_error.take() {
            return Err(e.into());
        }
        Ok(result.map_err(|e| e.to_string()))
    })?;
    file.sync()?;
    eprintln!("translate: {}", counts.summary());
    eprintln!(
        "file: {} lines written, {} rotations",
        file.written, file.rotations
    );
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads each input in turn (none, or `-`: stdin) and hands its text to `f`. An input that cannot
/// be read, or that `f` reports as partly unreadable (`Ok(Err(reason))`), is reported on stderr
/// and makes the result `true` ("some input failed", exit 2) without stopping the others; an
/// `Err` from `f` stops everything.
pub(super) fn each_input(
    files: Vec<PathBuf>,
    mut f: impl FnMut(&Arc<str>, &str) -> Result<std::result::Result<(), String>>,
) -> Result<bool> {
    let files = if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        files
    };
    let mut failed = false;
    for file in files {
        let origin: Arc<str> = Arc::from(file.display().to_string());
        match read_input(&file, &origin) {
            Ok(text) => {
                if let Err(reason) = f(&origin, &text)? {
                    eprintln!("{}", crate::translate::printable(&reason));
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!("{}", crate::translate::printable(&format!("{e:#}")));
                failed = true;
            }
        }
    }
    Ok(failed)
}

fn read_input(file: &PathBuf, origin: &str) -> Result<String> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .with_context(|| format!("{origin}: cannot read stdin"))?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("{origin}: cannot read"))?;
    }
    String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
        anyhow::anyhow!("{origin}:{line}: not UTF-8 (Defender payloads are UTF-8 JSON)")
    })
}
