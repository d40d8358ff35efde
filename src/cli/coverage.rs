//! `coverage FILE...`: per family and event name, the input columns and AdditionalFields keys
//! no field reads and the fields that stayed empty.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::translate::{each_input, parse_source};
use super::MappingArgs;
use crate::decode::decode_text;
use crate::mapping::coverage::Tally;
use crate::mapping::scratch::Scratch;
use crate::mapping::source_category;

#[derive(Args)]
pub struct CoverageArgs {
    /// Source kind: auto (from the payload's shape) or one of translate's kinds.
    #[arg(long, default_value = "auto")]
    source: String,
    /// Also list the fields that did get values.
    #[arg(long)]
    all_fields: bool,
    #[command(flatten)]
    mappings: MappingArgs,
    /// Input files; `-` or none for stdin.
    files: Vec<PathBuf>,
}

pub fn run(a: CoverageArgs) -> Result<ExitCode> {
    let forced = parse_source(&a.source)?;
    let set = a.mappings.load()?;
    let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut unmapped: BTreeMap<String, u64> = BTreeMap::new();
    let mut cache = Scratch::default();
    let failed = each_input(a.files, |origin, text| {
        let result = decode_text(text, origin, forced, |rec| {
            let family = rec
                .source
                .and_then(|kind| set.select(kind, &rec.payload, &mut cache));
            match family {
                Some(f) => {
                    let i = f.inspect(&rec.payload, &mut cache);
                    tallies
                        .entry((f.name.clone(), i.event_name.clone()))
                        .or_default()
                        .add(&i);
                }
                None => {
                    *unmapped
                        .entry(source_category(&rec).into_owned())
                        .or_default() += 1
                }
            }
        });
        Ok(result.map(|_| ()).map_err(|e| e.to_string()))
    })?;
    let families: BTreeMap<&str, &crate::mapping::Family> = set
        .families()
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let mut report = String::new();
    for ((family, name), t) in &tallies {
        let Some(f) = families.get(family.as_str()) else {
            continue;
        };
        let label = if name.is_empty() {
            "(no event name)"
        } else {
            name
        };
        report.push_str(&format!("{family} / {label}: {} records\n", t.records));
        let unread: Vec<String> = t
            .columns
            .iter()
            .filter(|(_, (_, read, _))| !read)
            .map(|(c, (n, _, known))| {
                format!(
                    "{c} ({n}{})",
                    if *known {
                        ""
                    } else {
                        ", not in the dictionary"
                    }
                )
            })
            .collect();
        if !unread.is_empty() {
            report.push_str(&format!(
                "  columns no field reads (carried to the vendor namespace only): {}\n",
                unread.join(", ")
            ));
        }
        let keys: Vec<String> = t
            .additional_fields
            .iter()
            .filter(|(_, (_, read))| !read)
            .map(|(k, (n, _))| format!("{k} ({n})"))
            .collect();
        if !keys.is_empty() {
            report.push_str(&format!(
                "  AdditionalFields keys no field reads: {}\n",
                keys.join(", ")
            ));
        }
        for (i, hits) in t.rule_hits.iter().enumerate() {
            if *hits == 0 {
                report.push_str(&format!("  always empty: {}\n", f.describe_rule(i)));
            } else if a.all_fields {
                report.push_str(&format!("  {hits}/{}: {}\n", t.records, f.describe_rule(i)));
            }
        }
    }
    for (category, n) in &unmapped {
        report.push_str(&format!("(unmapped) {category}: {n} records\n"));
    }
    print!("{report}");
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
