//! The monitoring client commands: `qm metrics ls|get|export` (what history holds, the current
//! values, a series' history as CSV) and `qm alerts`. Tables for people, `-o json` for scripts.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use qm_client::Client;
use qm_proto::{QueryDoc, format_rfc3339, to_json};

use crate::client::Failure;

/// `qm metrics ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MetricsCmd {
    /// The series history holds, with how many label sets each
    Ls,
    /// The current values (optionally only names starting with PREFIX)
    Get {
        /// e.g. qm_host_memory
        prefix: Option<String>,
    },
    /// A series' history as CSV: time, name, one column per label, value
    Export(ExportArgs),
}

/// `qm metrics export` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The series name, e.g. qm_host_memory_used_bytes
    #[arg(long)]
    name: String,
    /// Label matchers: label=value,label2=value2
    #[arg(long = "match", value_name = "MATCHERS")]
    matchers: Option<String>,
    /// Seconds back from now [default: 900]
    #[arg(long, value_name = "S")]
    since: Option<f64>,
    /// Start, RFC 3339 (instead of --since)
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// End, RFC 3339 [default: now]
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Seconds between points [default: the finest tier covering the range]
    #[arg(long, value_name = "S")]
    step: Option<f64>,
    /// Write to this file instead of stdout
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
}

/// `qm alerts` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct AlertsArgs {
    /// Only alerts in this state: pending, firing or resolved
    #[arg(long)]
    state: Option<String>,
}

pub(crate) fn metrics(
    c: &Client,
    cmd: MetricsCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        MetricsCmd::Ls => {
            let list = c.series()?;
            if json_out {
                writeln!(out, "{}", to_json(&list))?;
                return Ok(());
            }
            writeln!(out, "{:<48} {:>6}", "NAME", "SERIES")?;
            for s in &list.items {
                writeln!(out, "{:<48} {:>6}", s.name, s.series)?;
            }
            writeln!(
                out,
                "{} series, {} points, {:.1} MiB held",
                list.series,
                list.points,
                list.memory_bytes as f64 / 1_048_576.0
            )?;
        }
        MetricsCmd::Get { prefix } => {
            let snap = c.metrics(prefix.as_deref().unwrap_or(""))?;
            if json_out {
                writeln!(out, "{}", to_json(&snap))?;
                return Ok(());
            }
            for s in &snap.samples {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(out, "{:<44} {:<40} {}", s.name, labels.join(","), s.value)?;
            }
        }
        MetricsCmd::Export(a) => {
            let since = a.since.map(|s| s.to_string());
            let step = a.step.map(|s| s.to_string());
            let mut params: Vec<(&str, &str)> = vec![("name", &a.name)];
            for (k, v) in [
                ("match", a.matchers.as_deref()),
                ("since_s", since.as_deref()),
                ("from", a.from.as_deref()),
                ("to", a.to.as_deref()),
                ("step_s", step.as_deref()),
            ] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            let doc = c.query(&params)?;
            let text = if json_out {
                format!("{}\n", to_json(&doc))
            } else {
                csv(&doc)
            };
            match &a.file {
                Some(path) => std::fs::write(path, text).map_err(|e| Failure {
                    code: 1,
                    message: format!("cannot write {}: {e}", path.display()),
                })?,
                None => out.write_all(text.as_bytes())?,
            }
        }
    }
    Ok(())
}

/// One CSV field, quoted when it must be (RFC 4180).
fn field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// `time,name,<labels...>,value`, one row per point, series after series.
fn csv(doc: &QueryDoc) -> String {
    let keys: BTreeSet<&str> = doc
        .items
        .iter()
        .flat_map(|s| s.labels.keys().map(String::as_str))
        .collect();
    let mut out = String::from("time,name");
    for k in &keys {
        out.push(',');
        out.push_str(&field(k));
    }
    out.push_str(",value\n");
    for s in &doc.items {
        let labels: String = keys
            .iter()
            .map(|k| format!(",{}", field(s.labels.get(*k).map_or("", String::as_str))))
            .collect();
        for [t, v] in &s.points {
            let ms = (t * 1e3).round() as u64;
            out.push_str(&format!(
                "{},{}{labels},{v}\n",
                format_rfc3339(ms),
                field(&s.name)
            ));
        }
    }
    out
}

pub(crate) fn alerts(
    c: &Client,
    a: &AlertsArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let items = c.alerts(a.state.as_deref())?;
    if json_out {
        writeln!(out, "{}", to_json(&qm_proto::AlertList { items }))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<9} {:<9} {:<12} {:<40} SINCE",
        "RULE", "STATE", "SEVERITY", "VALUE", "LABELS"
    )?;
    for a in &items {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let since = a
            .resolved_at
            .as_ref()
            .or(a.fired_at.as_ref())
            .unwrap_or(&a.pending_since);
        writeln!(
            out,
            "{:<28} {:<9} {:<9} {:<12.4} {:<40} {since}",
            a.rule,
            a.state,
            a.severity,
            a.value,
            labels.join(",")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use qm_proto::SeriesDoc;

    use super::*;

    #[test]
    fn csv_has_one_column_per_label_and_quotes_what_needs_it() {
        let doc = QueryDoc {
            items: vec![
                SeriesDoc {
                    name: "qm_host_filesystem_used_ratio".into(),
                    labels: BTreeMap::from([("mountpoint".into(), "/a,b".into())]),
                    step_s: 1.0,
                    points: vec![[1_700_000_000.0, 0.5], [1_700_000_001.0, 0.25]],
                },
                SeriesDoc {
                    name: "qm_host_filesystem_used_ratio".into(),
                    labels: BTreeMap::from([("device".into(), "sda".into())]),
                    step_s: 1.0,
                    points: vec![[1_700_000_000.0, 1.0]],
                },
            ],
        };
        assert_eq!(
            csv(&doc),
            "time,name,device,mountpoint,value\n\
             2023-11-14T22:13:20.000Z,qm_host_filesystem_used_ratio,,\"/a,b\",0.5\n\
             2023-11-14T22:13:21.000Z,qm_host_filesystem_used_ratio,,\"/a,b\",0.25\n\
             2023-11-14T22:13:20.000Z,qm_host_filesystem_used_ratio,sda,,1\n"
        );
    }
}
