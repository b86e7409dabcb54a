//! The report: a Markdown table of medians and ratios to C, the same as JSON, and a chart of
//! the ratios (grouped bars per workload, one colour per client) drawn with plotters.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::env_info::EnvInfo;
use crate::{Client, Measured, Result, Rt, VariantResult};

pub struct Report<'a> {
    pub env: &'a EnvInfo,
    pub results: &'a [VariantResult],
}

/// Bytes as MB (10^6).
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A rate of rows per second, in M or k.
fn rows_per_second(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M rows/s", x / 1e6)
    } else {
        format!("{:.0} k rows/s", x / 1e3)
    }
}

fn fmt_time(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// A client's main row on a variant (the run's runtime).
fn measured(result: &VariantResult, client: Client) -> Option<&Measured> {
    measured_on(result, client, Rt::Main)
}

/// A client's row on a variant on runtime `rt`.
fn measured_on(result: &VariantResult, client: Client, rt: Rt) -> Option<&Measured> {
    result
        .measured
        .iter()
        .find(|m| m.client == client && m.rt == rt)
}

/// Why a client's numbers on a variant do not count, if they do not: it failed (an error in
/// the warm-up or a run, or a checksum that changed between runs), or its checksum differs
/// from C's, so it did other work than C (a wrong result measured fast is no result).
pub fn failure(result: &VariantResult, m: &Measured) -> Option<String> {
    if let Some(e) = &m.error {
        return Some(format!("error: {e}"));
    }
    let c_sum = measured(result, Client::C).and_then(|c| c.checksum);
    match (c_sum, m.checksum) {
        (Some(c), Some(sum)) if c != sum => Some(format!("wrong result: checksum {sum}, C's {c}")),
        _ => None,
    }
}

/// A client's median on one variant (its main row), if it ran and did not fail.
fn median(result: &VariantResult, client: Client) -> Option<Duration> {
    median_of(result, measured(result, client)?)
}

/// A row's median, if it did not fail.
fn median_of(result: &VariantResult, m: &Measured) -> Option<Duration> {
    if failure(result, m).is_some() {
        None
    } else {
        m.median()
    }
}

/// The ratio of a client's median (its main row) to C's on one variant (neither failed).
fn ratio(result: &VariantResult, client: Client) -> Option<f64> {
    ratio_of(result, measured(result, client)?)
}

/// The ratio of a row's median to C's on its variant (neither failed).
fn ratio_of(result: &VariantResult, m: &Measured) -> Option<f64> {
    let c = median(result, Client::C)?;
    Some(median_of(result, m)?.as_secs_f64() / c.as_secs_f64())
}

/// The spread of a row's runs, (max − min) / median.
fn spread(m: &Measured) -> Option<f64> {
    let (lo, hi) = m.min_max()?;
    let med = m.median()?.as_secs_f64();
    (med > 0.0).then(|| (hi - lo).as_secs_f64() / med)
}

/// Why `ours` and `theirs` cannot be compared on a variant where both ran: one of them
/// failed there.
fn not_compared(result: &VariantResult, ours: Client, theirs: Client) -> Option<String> {
    let (a, b) = (measured(result, ours)?, measured(result, theirs)?);
    let failed: Vec<&str> = [(a, ours), (b, theirs)]
        .into_iter()
        .filter(|(m, _)| failure(result, m).is_some())
        .map(|(_, c)| c.name())
        .collect();
    (!failed.is_empty())
        .then(|| format!("{} not compared ({} FAILED)", result.id, failed.join(", ")))
}

/// Whether the numbers meet a goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Met on every workload of the goal that was run (and at least one was).
    Met,
    /// Missed on at least one workload. A workload where a client the goal compares failed
    /// cannot show that it is met, so it counts as missed.
    Missed,
    /// None of the goal's workloads (or clients, or runtimes) was run: nothing to check.
    NotRun,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::NotRun => "not run",
        }
    }
}

/// One goal of issue 7 or 16, checked against the numbers.
#[derive(Debug)]
pub struct Goal {
    pub line: String,
    pub verdict: Verdict,
}

impl Goal {
    pub fn met(&self) -> bool {
        self.verdict == Verdict::Met
    }

    /// An issue-7 goal: met or missed on the variants it covers.
    fn of(line: String, met: bool) -> Goal {
        Goal {
            line,
            verdict: if met { Verdict::Met } else { Verdict::Missed },
        }
    }
}

/// One workload's part in a goal of issue 16.
#[derive(Debug)]
enum Part {
    /// The workload, a client or the runtime the goal needs was not run: why.
    NotRun(String),
    /// A client the goal compares failed there.
    Failed(String),
    /// The numbers, and whether they meet the goal.
    Checked { text: String, ok: bool },
}

/// A goal of issue 16 from its workloads' parts: missed if missed or failed on one, met if
/// met on every one that was run, not run if none was.
fn goal16(title: &str, parts: Vec<Part>) -> Goal {
    let missed = parts
        .iter()
        .any(|p| matches!(p, Part::Failed(_) | Part::Checked { ok: false, .. }));
    let checked = parts.iter().any(|p| matches!(p, Part::Checked { .. }));
    let verdict = if missed {
        Verdict::Missed
    } else if checked {
        Verdict::Met
    } else {
        Verdict::NotRun
    };
    let several = parts.len() > 1;
    let details: Vec<String> = parts
        .into_iter()
        .map(|p| match p {
            Part::NotRun(why) => why,
            Part::Failed(why) => why,
            Part::Checked { text, ok } if several => {
                format!("{text} ({})", if ok { "met" } else { "missed" })
            }
            Part::Checked { text, .. } => text,
        })
        .collect();
    Goal {
        line: format!("{title}: **{}** — {}", verdict.word(), details.join(", ")),
        verdict,
    }
}

impl Report<'_> {
    /// Every client that failed on a variant, one line each: its numbers are left out of the
    /// tables, the ratios, the goals and the chart.
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .flat_map(|r| {
                r.measured.iter().filter_map(move |m| {
                    failure(r, m).map(|why| format!("{} {}: {why}", r.id, m.label()))
                })
            })
            .collect()
    }

    /// `Ok` when no client failed and every goal is met; otherwise what went wrong, for
    /// `--enforce-goals`.
    pub fn verdict(&self) -> std::result::Result<(), String> {
        let mut wrong = self.failures();
        wrong.extend(
            self.goals()
                .into_iter()
                .chain(self.goals16())
                .chain(self.goals18())
                .filter(|g| g.verdict == Verdict::Missed)
                .map(|g| g.line),
        );
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    }

    fn variant(&self, id: &str) -> Option<&VariantResult> {
        self.results.iter().find(|r| r.id == id)
    }

    fn clients(&self) -> Vec<Client> {
        Client::ALL
            .into_iter()
            .filter(|c| self.results.iter().any(|r| measured(r, *c).is_some()))
            .collect()
    }

    pub fn markdown(&self) -> String {
        let env = self.env;
        let clients = self.clients();
        let mut md = String::new();
        let _ = writeln!(md, "# pqlib benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `bench/` (`cd bench && cargo run --release{}`); every client \
             runs every workload it supports in one run, interleaved (A B C … A B C …, each \
             repetition starting with the next client), one warm-up then {} measured runs \
             each. Times are medians; the ratio is the median over the raw C program's median \
             (lower is better, 1.00× = C). `—` means the client has no such feature (see the \
             notes).\n",
            if env.args.is_empty() {
                String::new()
            } else {
                format!(" -- {}", env.args)
            },
            env.reps
        );
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(
            md,
            "| machine | {} ({} cores), {} |",
            env.cpu, env.cores, env.kernel
        );
        let _ = writeln!(
            md,
            "| load average (1/5/15 min) | {} at the start, {} at the end |",
            env.load, env.load_end
        );
        let _ = writeln!(md, "| CPU placement | {} |", env.pinning);
        let _ = writeln!(
            md,
            "| multi-thread runtime rows (W1, W7b) | {} |",
            env.multi
        );
        let _ = writeln!(md, "| server | {} |", env.server_version);
        let _ = writeln!(md, "| connection | {} |", env.transport);
        let _ = writeln!(
            md,
            "| libpq (C, pqlib) | {}, {} |",
            env.libpq, env.libpq_source
        );
        let crates: Vec<String> = env.crates.iter().map(|(n, v)| format!("{n} {v}")).collect();
        let _ = writeln!(md, "| crates | {} |", crates.join(", "));
        let _ = writeln!(md, "| rustc | {} |", env.rustc);
        if let Some(py) = &env.python {
            let _ = writeln!(md, "| psycopg | {py} |");
        }
        let _ = writeln!(
            md,
            "| mode | {}, {} measured runs, {:.0} s in all |\n",
            env.mode,
            env.reps,
            env.elapsed.as_secs_f64()
        );

        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(
                md,
                "## Failures\n\nThese clients' numbers are not counted anywhere below (not in \
                 the ratios, the goals or the chart):\n"
            );
            for f in &failures {
                let _ = writeln!(md, "- **FAILED** {}", f.replace('|', "/"));
            }
            md.push('\n');
        }

        let _ = writeln!(md, "## Medians and ratios to C\n");
        let _ = write!(md, "| workload |");
        for c in &clients {
            let _ = write!(md, " {} |", c.name());
        }
        let _ = write!(md, "\n|---|");
        for _ in &clients {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for r in self.results {
            let _ = write!(md, "| **{}** {} ({}) |", r.id, r.title, r.unit);
            for &c in &clients {
                match (measured(r, c), median(r, c)) {
                    (Some(m), _) if m.error.is_some() => {
                        let _ = write!(md, " FAILED: error |");
                    }
                    (Some(m), _) if failure(r, m).is_some() => {
                        let _ = write!(md, " FAILED: wrong result |");
                    }
                    (Some(_), Some(t)) => {
                        let ratio = ratio(r, c)
                            .map(|x| format!(" **{x:.2}×**"))
                            .unwrap_or_default();
                        let _ = write!(md, " {}{} |", fmt_time(t), ratio);
                    }
                    _ => {
                        let _ = write!(md, " — |");
                    }
                }
            }
            md.push('\n');
        }
        md.push('\n');
        self.markdown_w8(&mut md);
        self.markdown_w9(&mut md);

        let goals = self.goals();
        if !goals.is_empty() {
            let _ = writeln!(md, "## Goals of issue 7, checked against these numbers\n");
            for g in goals {
                let _ = writeln!(md, "- {}", g.line);
            }
            md.push('\n');
        }

        self.markdown_issue16(&mut md);
        self.markdown_issue18(&mut md);
        self.markdown_multi(&mut md);

        let _ = writeln!(md, "## Protocol choices\n");
        for c in &clients {
            let _ = writeln!(md, "- **{}**: {}", c.name(), c.protocol());
        }
        md.push('\n');

        let _ = writeln!(
            md,
            "## Per workload: how each client runs it, spread, notes\n"
        );
        for r in self.results {
            let _ = writeln!(md, "### {} {} ({})\n", r.id, r.title, r.unit);
            let _ = writeln!(md, "| client | how | median | min – max | ratio |");
            let _ = writeln!(md, "|---|---|---:|---:|---:|");
            for m in &r.measured {
                let (med, spread) = match (failure(r, m), m.median(), m.min_max()) {
                    (Some(why), _, _) => {
                        (format!("FAILED: {}", why.replace('|', "/")), String::new())
                    }
                    (None, Some(t), Some((lo, hi))) => {
                        (fmt_time(t), format!("{} – {}", fmt_time(lo), fmt_time(hi)))
                    }
                    _ => ("—".into(), String::new()),
                };
                let ratio = ratio_of(r, m)
                    .map(|x| format!("{x:.2}×"))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "| {} | {} | {med} | {spread} | {ratio} |",
                    m.label(),
                    m.how
                );
            }
            for (c, why) in &r.missing {
                let _ = writeln!(md, "| {} | — {why} | | | |", c.name());
            }
            if let Some(note) = &r.checksum_note {
                let _ = writeln!(md, "\n**Warning**: {note}");
            }
            md.push('\n');
        }
        let sizes = concat!(env!("CARGO_MANIFEST_DIR"), "/results/binary-size.md");
        if let Ok(table) = std::fs::read_to_string(sizes) {
            let _ = writeln!(
                md,
                "## Binary size of `examples/quickstart`\n\nFrom `bench/binary-size.sh`:\n\n{table}"
            );
        }
        if !env.notes.is_empty() {
            let _ = writeln!(md, "## Notes\n");
            for n in &env.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }

    /// A client's median on variant `id` over its median on `base` (both ran, neither failed).
    fn change(&self, client: Client, id: &str, base: &str) -> Option<f64> {
        let a = median(self.variant(id)?, client)?;
        let b = median(self.variant(base)?, client)?;
        Some(a.as_secs_f64() / b.as_secs_f64())
    }

    /// The paragraph under the W8 rows: what never-prepare costs against W1/W2's cached named
    /// statement, and what PgBouncer adds, from the medians of this run.
    fn markdown_w8(&self, md: &mut String) {
        if !self.results.iter().any(|r| r.id.starts_with("W8")) {
            return;
        }
        let pct = |x: Option<f64>| match x {
            Some(x) => format!("{:+.1} %", (x - 1.0) * 100.0),
            None => "not measured".to_owned(),
        };
        let mut lines = Vec::new();
        for client in [Client::C, Client::PqlibSync, Client::PqlibAsync] {
            let direct =
                [("W8a", "W1"), ("W8c", "W2")].map(|(id, base)| self.change(client, id, base));
            let pooled =
                [("W8b", "W8a"), ("W8d", "W8c")].map(|(id, base)| self.change(client, id, base));
            if direct.iter().chain(&pooled).all(Option::is_none) {
                continue;
            }
            let named = if client == Client::C {
                "PQexecParams costs"
            } else {
                "never-prepare costs"
            };
            lines.push(format!(
                "- {}: {named} {} over a cached named statement, direct (W8a over W1; W8c over \
                 W2: {}); PgBouncer adds {} (W8b over W8a; W8d over W8c: {}).",
                client.name(),
                pct(direct[0]),
                pct(direct[1]),
                pct(pooled[0]),
                pct(pooled[1])
            ));
        }
        if lines.is_empty() {
            let _ = writeln!(
                md,
                "**W8, never-prepare and PgBouncer**: nothing to compare in this run (neither \
                 W8a/W8c with W1/W2 nor W8b/W8d with W8a/W8c ran for C, pqlib or \
                 pqlib::tokio).\n"
            );
            return;
        }
        let _ = writeln!(
            md,
            "**W8, never-prepare and PgBouncer** (medians of this run; \"not measured\" where \
             a workload of the pair did not run or the client failed on it):\n\n{}\n",
            lines.join("\n")
        );
    }

    /// The paragraph under the W9 rows: each client's throughput from its median, rows/s
    /// (the stream's rows over the median) and MB/s (the bytes it received over the median).
    fn markdown_w9(&self, md: &mut String) {
        let mut lines = Vec::new();
        for r in self.results.iter().filter(|r| r.id.starts_with("W9")) {
            let Some(volume) = &r.volume else {
                continue;
            };
            let stream = if volume.c_what == volume.what && volume.c_bytes == volume.bytes {
                format!("{}, {}", volume.what, mb(volume.bytes))
            } else {
                format!(
                    "{}, {}; C: {}, {}",
                    volume.what,
                    mb(volume.bytes),
                    volume.c_what,
                    mb(volume.bytes_of(Client::C))
                )
            };
            let clients: Vec<String> = [Client::C, Client::PqlibSync, Client::PqlibAsync]
                .into_iter()
                .filter(|&c| measured(r, c).is_some())
                .map(|c| match median(r, c) {
                    Some(t) => {
                        let secs = t.as_secs_f64();
                        format!(
                            "{} {}, {:.1} MB/s",
                            c.name(),
                            rows_per_second(volume.rows as f64 / secs),
                            volume.bytes_of(c) as f64 / 1e6 / secs
                        )
                    }
                    None => format!("{} not measured", c.name()),
                })
                .collect();
            if clients.is_empty() {
                continue;
            }
            lines.push(format!(
                "- {} ({} rows; {}): {}.",
                r.id,
                volume.rows,
                stream,
                clients.join("; ")
            ));
        }
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "**W9, logical decoding throughput** (rows/s: the stream's rows over the median \
             run; MB/s: the XLogData payload bytes the client received over the median run; \
             C libpq is `pg_recvlogical`, whose runs include its process start; \"not \
             measured\" where the client failed):\n\n{}\n",
            lines.join("\n")
        );
    }

    fn markdown_issue18(&self, md: &mut String) {
        let _ = writeln!(md, "## Goal of issue 18, checked against these numbers\n");
        for g in self.goals18() {
            let _ = writeln!(md, "- {}", g.line);
        }
        md.push('\n');
    }

    /// The goal of issue 18 (replication): pqlib's full pgoutput decode (W9b) at least as
    /// fast as `pg_recvlogical` merely receiving test_decoding text (W9b's C row).
    pub fn goals18(&self) -> Vec<Goal> {
        let parts = [Client::PqlibSync, Client::PqlibAsync]
            .into_iter()
            .map(|client| match self.part_to_c(client, "W9b", 1.00) {
                Part::Checked { text, ok } => Part::Checked {
                    text: format!("{} {text}", client.name()),
                    ok,
                },
                other => other,
            })
            .collect();
        vec![goal16(
            "W9b: pqlib's full pgoutput decode at most 1.00× `pg_recvlogical` receiving \
             test_decoding text into /dev/null (the C libpq row)",
            parts,
        )]
    }

    fn markdown_issue16(&self, md: &mut String) {
        let env = self.env;
        let _ = writeln!(md, "## Goals of issue 16, checked against these numbers\n");
        let _ = writeln!(
            md,
            "This run used libpq {}, {}. The goals apply to both the system libpq 15 run and \
             the `--features vendored` libpq 18 run. Ratios are a client's median over C's median in \
             this run; a goal whose workloads (or clients, or runtime rows) were not run \
             (`--only`, `--clients`, `--no-multi`, `--runtime multi`) says **not run**.\n",
            env.libpq, env.libpq_source
        );
        for g in self.goals16() {
            let _ = writeln!(md, "- {}", g.line);
        }
        md.push('\n');
    }

    /// The table of the multi-thread runtime rows next to the same clients' main rows.
    fn markdown_multi(&self, md: &mut String) {
        let env = self.env;
        let ids = ["W1", "W7b"];
        let has_rows = self
            .results
            .iter()
            .any(|r| r.measured.iter().any(|m| m.rt == Rt::Multi));
        if !has_rows && !ids.iter().any(|id| self.variant(id).is_some()) {
            return;
        }
        let _ = writeln!(md, "## W1 / W7b on a multi-thread runtime\n");
        if !has_rows {
            // "not run (…)" or "not run: …", from the harness.
            let mut why = env.multi.clone();
            if let Some(first) = why.get(..1) {
                why.replace_range(..1, &first.to_uppercase());
            }
            let _ = writeln!(md, "{why}.\n");
            return;
        }
        let _ = writeln!(
            md,
            "The main rows above run the async clients on a {main}; most programs start \
             theirs with `#[tokio::main]`, a multi-thread runtime. So the async clients run \
             W1 and W7b a second time, in the same run and interleaved with every other \
             client's runs of those workloads, on a {multi}. Ratios are to the same run's C \
             median; the last column compares a client's two rows.\n\n\
             Placement, chosen to be what a `#[tokio::main]` program on this machine gets: \
             one worker per CPU ({cores} here) and no pinning, so the kernel puts the workers \
             on either CPU, next to the server or not. Each measured run is a task spawned on \
             the runtime, as a request handler is; the harness's own pinned thread only \
             starts it and waits for it. The server stays where the run put it for every row \
             ({pinning}), so these rows and the C baseline meet the same server. The workers \
             are deliberately not pinned to the harness's CPU: a multi-thread runtime \
             squeezed onto one CPU measures thread wake-ups on that CPU (pqlib::tokio and \
             tokio-postgres at 2.1× C on W1 when that was tried), which no unpinned \
             `#[tokio::main]` program sees. The other CPU is shared with whatever else runs on \
             the machine (see the load average), so these rows are noisier than the pinned \
             ones.\n",
            main = if env.main_runtime == "multi" {
                "multi-thread runtime"
            } else {
                "tokio current-thread runtime"
            },
            multi = env.multi,
            cores = env.cores,
            pinning = env
                .pinning
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .replace(" (`--cpu same`)", ", `--cpu same`")
                .replace(" (`--cpu split`)", ", `--cpu split`"),
        );
        let _ = writeln!(
            md,
            "| workload | client | current-thread runtime | multi-thread runtime | multi / current |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
        let cell = |r: &VariantResult, m: Option<&Measured>| match m {
            None => "—".to_owned(),
            Some(m) if failure(r, m).is_some() => "FAILED".to_owned(),
            Some(m) => match (median_of(r, m), ratio_of(r, m)) {
                (Some(t), Some(x)) => format!("{} **{x:.2}×**", fmt_time(t)),
                (Some(t), None) => fmt_time(t),
                _ => "—".to_owned(),
            },
        };
        for id in ids {
            let Some(r) = self.variant(id) else {
                continue;
            };
            let c = measured(r, Client::C);
            let noise = c
                .and_then(spread)
                .map(|x| format!(", C's spread {:.1}%", x * 100.0))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| **{id}** ({}{noise}) | C libpq (no runtime) | {} | | |",
                r.unit,
                cell(r, c)
            );
            for client in [Client::PqlibAsync, Client::TokioPostgres, Client::Sqlx] {
                let (main, multi) = (measured(r, client), measured_on(r, client, Rt::Multi));
                if main.is_none() && multi.is_none() {
                    continue;
                }
                let change = match (
                    main.and_then(|m| median_of(r, m)),
                    multi.and_then(|m| median_of(r, m)),
                ) {
                    (Some(a), Some(b)) => {
                        format!("{:+.1}%", (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0)
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    md,
                    "| {id} | {} | {} | {} | {change} |",
                    client.name(),
                    cell(r, main),
                    cell(r, multi)
                );
            }
        }
        md.push('\n');
    }

    /// The goals of issue 7, each with a line saying whether these numbers meet it.
    pub fn goals(&self) -> Vec<Goal> {
        let mut lines = Vec::new();
        let pct = |x: f64| format!("{:+.1}%", (x - 1.0) * 100.0);
        // Where a client a goal compares failed, the goal cannot be shown met there.
        let failed = |r: &VariantResult, client: Client| {
            measured(r, client).is_some_and(|m| failure(r, m).is_some())
        };
        // 1. pqlib within 1.05× of C everywhere it runs. Not W9: its C is pg_recvlogical, a
        // whole program rather than the same libpq calls, and issue 18 sets W9's own goal.
        let same_calls = |r: &&VariantResult| !r.id.starts_with("W9");
        for (client, label) in [
            (Client::PqlibSync, "pqlib"),
            (Client::PqlibAsync, "pqlib::tokio"),
        ] {
            let misses: Vec<String> = self
                .results
                .iter()
                .filter(same_calls)
                .filter(|r| measured(r, client).is_some())
                .filter_map(|r| {
                    if failed(r, client) {
                        Some(format!("{} FAILED", r.id))
                    } else if failed(r, Client::C) {
                        Some(format!("{} not compared (C FAILED)", r.id))
                    } else {
                        ratio(r, client)
                            .filter(|&x| x > 1.05)
                            .map(|x| format!("{} {x:.2}×", r.id))
                    }
                })
                .collect();
            let runs = self
                .results
                .iter()
                .filter(same_calls)
                .filter(|r| ratio(r, client).is_some())
                .count();
            lines.push(if misses.is_empty() {
                Goal::of(
                    format!("{label} within 1.05× of C: **met** on all {runs} workloads it runs"),
                    true,
                )
            } else {
                Goal::of(
                    format!(
                        "{label} within 1.05× of C: **missed** on {}",
                        misses.join(", ")
                    ),
                    false,
                )
            });
        }
        // 2. faster than postgres / tokio-postgres on W3 and every W4 variant.
        let w34 = |id: &str| id.starts_with("W3") || id.starts_with("W4");
        for (ours, theirs) in [
            (Client::PqlibSync, Client::Postgres),
            (Client::PqlibSync, Client::TokioPostgres),
            (Client::PqlibAsync, Client::TokioPostgres),
        ] {
            let mut bad = Vec::new();
            let mut n = 0;
            for r in self.results.iter().filter(|r| w34(r.id)) {
                if let Some(why) = not_compared(r, ours, theirs) {
                    n += 1;
                    bad.push(why);
                } else if let (Some(a), Some(b)) = (median(r, ours), median(r, theirs)) {
                    n += 1;
                    if a >= b {
                        bad.push(format!(
                            "{} {}",
                            r.id,
                            pct(a.as_secs_f64() / b.as_secs_f64())
                        ));
                    }
                }
            }
            if n > 0 {
                lines.push(if bad.is_empty() {
                    Goal::of(
                        format!(
                            "{} faster than {} on W3/W4: **met** ({n} variants)",
                            ours.name(),
                            theirs.name()
                        ),
                        true,
                    )
                } else {
                    Goal::of(
                        format!(
                            "{} faster than {} on W3/W4: **missed** on {}",
                            ours.name(),
                            theirs.name(),
                            bad.join(", ")
                        ),
                        false,
                    )
                });
            }
        }
        // 3. at least as fast as sqlx everywhere; 4. async W6/W7 at least as fast as tokio-postgres.
        let at_least = |ours: Client, theirs: Client, filter: &dyn Fn(&str) -> bool, what: &str| {
            let mut bad = Vec::new();
            let mut n = 0;
            for r in self.results.iter().filter(|r| filter(r.id)) {
                if let Some(why) = not_compared(r, ours, theirs) {
                    n += 1;
                    bad.push(why);
                } else if let (Some(a), Some(b)) = (median(r, ours), median(r, theirs)) {
                    n += 1;
                    if a > b {
                        bad.push(format!(
                            "{} {}",
                            r.id,
                            pct(a.as_secs_f64() / b.as_secs_f64())
                        ));
                    }
                }
            }
            (n > 0).then(|| {
                if bad.is_empty() {
                    Goal::of(
                        format!(
                            "{} at least as fast as {} {what}: **met** ({n} variants)",
                            ours.name(),
                            theirs.name()
                        ),
                        true,
                    )
                } else {
                    Goal::of(
                        format!(
                            "{} at least as fast as {} {what}: **missed** on {} (slower by)",
                            ours.name(),
                            theirs.name(),
                            bad.join(", ")
                        ),
                        false,
                    )
                }
            })
        };
        lines.extend(at_least(
            Client::PqlibSync,
            Client::Sqlx,
            &|_| true,
            "everywhere",
        ));
        lines.extend(at_least(
            Client::PqlibAsync,
            Client::Sqlx,
            &|_| true,
            "everywhere",
        ));
        lines.extend(at_least(
            Client::PqlibAsync,
            Client::TokioPostgres,
            &|id| id.starts_with("W6") || id.starts_with("W7"),
            "on W6/W7",
        ));
        lines
    }

    /// The goals of issue 16, each with a line saying whether these numbers meet them.
    pub fn goals16(&self) -> Vec<Goal> {
        let tokio = Client::PqlibAsync;
        let at_most = |client: Client, ids: &[&str], max: f64| {
            let title = format!(
                "{} at most {max:.2}× C on {}",
                client.name(),
                ids.join(", ")
            );
            let parts = ids
                .iter()
                .map(|id| self.part_to_c(client, id, max))
                .collect();
            goal16(&title, parts)
        };
        let than_peer = |title: &str, ids: &[&str], ok: fn(f64) -> bool| {
            let parts = ids
                .iter()
                .map(|id| self.part_to_peer(tokio, Client::TokioPostgres, id, ok))
                .collect();
            goal16(title, parts)
        };
        let rtt = ["W1", "W2", "W4a", "W6s"];
        vec![
            at_most(tokio, &rtt, 1.20),
            than_peer(
                "pqlib::tokio at least 15 % faster than tokio-postgres on W1, W2, W4a, W6s \
                 (its median ≤ 0.85 × tokio-postgres' median; shown: the ratio of the two)",
                &rtt,
                |x| x <= 0.85,
            ),
            at_most(tokio, &["W3s"], 1.10),
            at_most(tokio, &["W4c", "W4d"], 1.10),
            at_most(tokio, &["W5"], 1.05),
            at_most(tokio, &["W6p"], 1.10),
            than_peer(
                "pqlib::tokio faster than tokio-postgres on W7a, W7b (its median < \
                 tokio-postgres' median; shown: the ratio of the two)",
                &["W7a", "W7b"],
                |x| x < 1.0,
            ),
            at_most(Client::PqlibSync, &["W3", "W4d"], 1.05),
            goal16(
                "pqlib::tokio on a multi-thread runtime no worse than on the current-thread \
                 runtime by more than the noise on W1, W7b (its multi-thread median ≤ its \
                 current-thread median × (1 + noise); noise: the spread (max − min) / median \
                 of the C runs of that workload in this run)",
                ["W1", "W7b"]
                    .iter()
                    .map(|id| self.part_multi(tokio, id))
                    .collect(),
            ),
        ]
    }

    /// Why `client`'s main row and C's on workload `id` cannot be compared, if they cannot,
    /// or the variant and the two rows.
    fn pair(
        &self,
        client: Client,
        theirs: Client,
        id: &str,
    ) -> std::result::Result<(&VariantResult, &Measured, &Measured), Part> {
        let r = self
            .variant(id)
            .ok_or_else(|| Part::NotRun(format!("{id} not run")))?;
        let not_run = |c: Client| Part::NotRun(format!("{id}: {} not run", c.name()));
        let ours = measured(r, client).ok_or_else(|| not_run(client))?;
        let other = measured(r, theirs).ok_or_else(|| not_run(theirs))?;
        for m in [ours, other] {
            if failure(r, m).is_some() {
                return Err(Part::Failed(format!("{id} {} FAILED", m.label())));
            }
        }
        Ok((r, ours, other))
    }

    /// `client`'s ratio to C on workload `id`, at most `max`.
    fn part_to_c(&self, client: Client, id: &str, max: f64) -> Part {
        let (r, ours, _) = match self.pair(client, Client::C, id) {
            Ok(found) => found,
            Err(part) => return part,
        };
        match ratio_of(r, ours) {
            Some(x) => Part::Checked {
                text: format!("{id} {x:.2}×"),
                ok: x <= max,
            },
            None => Part::NotRun(format!("{id}: no measured runs")),
        }
    }

    /// `ours`' median over `theirs`' on workload `id`, judged by `ok`.
    fn part_to_peer(&self, ours: Client, theirs: Client, id: &str, ok: fn(f64) -> bool) -> Part {
        let (r, a, b) = match self.pair(ours, theirs, id) {
            Ok(found) => found,
            Err(part) => return part,
        };
        match (median_of(r, a), median_of(r, b)) {
            (Some(a), Some(b)) => {
                let x = a.as_secs_f64() / b.as_secs_f64();
                Part::Checked {
                    text: format!("{id} {x:.2}×"),
                    ok: ok(x),
                }
            }
            _ => Part::NotRun(format!("{id}: no measured runs")),
        }
    }

    /// `client` on the multi-thread runtime against its main (current-thread) row on
    /// workload `id`: no worse than the noise, the spread of C's runs there.
    fn part_multi(&self, client: Client, id: &str) -> Part {
        let (r, main, c) = match self.pair(client, Client::C, id) {
            Ok(found) => found,
            Err(part) => return part,
        };
        if self.env.main_runtime == "multi" {
            return Part::NotRun(format!(
                "{id}: the main runtime is multi-thread, no current-thread row"
            ));
        }
        let Some(multi) = measured_on(r, client, Rt::Multi) else {
            return Part::NotRun(format!(
                "{id}: {} on a multi-thread runtime not run",
                client.name()
            ));
        };
        if failure(r, multi).is_some() {
            return Part::Failed(format!("{id} {} FAILED", multi.label()));
        }
        let (Some(x_main), Some(x_multi), Some(noise)) =
            (ratio_of(r, main), ratio_of(r, multi), spread(c))
        else {
            return Part::NotRun(format!("{id}: no measured runs"));
        };
        let worse = x_multi / x_main - 1.0;
        Part::Checked {
            text: format!(
                "{id} {x_multi:.2}× C multi-thread vs {x_main:.2}× current-thread \
                 ({:+.1}%, noise {:.1}%)",
                worse * 100.0,
                noise * 100.0
            ),
            ok: worse <= noise,
        }
    }

    pub fn json(&self) -> String {
        let env = self.env;
        let results: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "title": r.title,
                    "unit": r.unit,
                    "checksum_note": r.checksum_note,
                    "volume": r.volume.as_ref().map(|v| serde_json::json!({
                        "rows": v.rows, "bytes": v.bytes, "what": v.what,
                        "c_bytes": v.c_bytes, "c_what": v.c_what,
                    })),
                    "clients": r.measured.iter().map(|m| serde_json::json!({
                        "client": m.client.name(),
                        "runtime": match m.rt {
                            Rt::Main => "main",
                            Rt::Multi => "multi-thread (extra row)",
                        },
                        "how": m.how,
                        "times_ms": m.times.iter().map(|t| t.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
                        "median_ms": m.median().map(|t| t.as_secs_f64() * 1000.0),
                        "ratio_to_c": ratio_of(r, m),
                        "failure": failure(r, m),
                        "error": m.error,
                        "checksum": m.checksum,
                    })).collect::<Vec<_>>(),
                    "missing": r.missing.iter().map(|(c, why)| serde_json::json!({
                        "client": c.name(), "why": why,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = serde_json::json!({
            "machine": { "cpu": env.cpu, "cores": env.cores, "kernel": env.kernel,
                         "load_at_start": env.load, "load_at_end": env.load_end,
                         "placement": env.pinning },
            "server": env.server_version,
            "libpq": env.libpq,
            "libpq_source": env.libpq_source,
            "multi_thread_rows": env.multi,
            "transport": env.transport,
            "crates": env.crates.iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>(),
            "rustc": env.rustc,
            "psycopg": env.python,
            "mode": env.mode,
            "reps": env.reps,
            "seconds": env.elapsed.as_secs_f64(),
            "failures": self.failures(),
            "goals": self.goals().iter().map(|g| serde_json::json!({
                "goal": g.line, "met": g.met(),
            })).collect::<Vec<_>>(),
            "goals_issue16": self.goals16().iter().map(|g| serde_json::json!({
                "goal": g.line, "verdict": g.verdict.word(),
            })).collect::<Vec<_>>(),
            "goals_issue18": self.goals18().iter().map(|g| serde_json::json!({
                "goal": g.line, "verdict": g.verdict.word(),
            })).collect::<Vec<_>>(),
            "results": results,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Grouped bars: one group per workload variant, one bar per client, height = ratio to C.
    pub fn svg(&self, path: &Path) -> Result<()> {
        let clients: Vec<Client> = self.clients();
        let variants: Vec<&VariantResult> = self
            .results
            .iter()
            .filter(|r| r.c_median().is_some())
            .collect();
        let nv = variants.len().max(1);
        const CAP: f64 = 4.0;
        let top = variants
            .iter()
            .flat_map(|r| clients.iter().filter_map(|&c| ratio(r, c)))
            .fold(1.2f64, f64::max)
            .min(CAP)
            * 1.1;
        let colours = [
            RGBColor(0x44, 0x44, 0x44), // C
            RGBColor(0xd6, 0x27, 0x28), // pqlib
            RGBColor(0xff, 0x7f, 0x0e), // pqlib::tokio
            RGBColor(0x1f, 0x77, 0xb4), // postgres
            RGBColor(0x17, 0xbe, 0xcf), // tokio-postgres
            RGBColor(0x2c, 0xa0, 0x2c), // sqlx
            RGBColor(0x94, 0x67, 0xbd), // psycopg
        ];
        let colour = |c: Client| colours[Client::ALL.iter().position(|&x| x == c).unwrap_or(0)];

        let root = SVGBackend::new(path, (1400, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!(
            "Time relative to raw C libpq (lower is better; bars above {CAP}× are cut, value shown) — {}",
            self.env.transport
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(nv as f64 - 0.5), 0f64..top)?;
        let ids: Vec<&str> = variants.iter().map(|r| r.id).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(nv)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    ids.get(i as usize)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("× C's median time")
            .y_label_formatter(&|y| format!("{y:.1}×"))
            .draw()?;
        let slot = 0.84 / clients.len().max(1) as f64;
        for (k, &client) in clients.iter().enumerate() {
            let style = colour(client).filled();
            let bars: Vec<(f64, f64, f64)> = variants
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let x0 = i as f64 - 0.42 + k as f64 * slot;
                    ratio(r, client).map(|y| (x0, y, x0 + slot * 0.9))
                })
                .collect();
            chart
                .draw_series(
                    bars.iter()
                        .map(|&(x0, y, x1)| Rectangle::new([(x0, 0.0), (x1, y.min(top))], style)),
                )?
                .label(client.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour(client).filled())
                });
            // The value of bars cut at the top.
            chart.draw_series(bars.iter().filter(|b| b.1 > top).map(|&(x0, y, _)| {
                Text::new(
                    format!("{y:.1}"),
                    (x0, top * 0.97),
                    ("sans-serif", 11).into_font(),
                )
            }))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 1.0), (nv as f64 - 0.5, 1.0)],
            BLACK.stroke_width(1),
        )))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvInfo {
        EnvInfo {
            cpu: "test cpu".into(),
            cores: 2,
            kernel: "test kernel".into(),
            rustc: "rustc".into(),
            server_version: "server".into(),
            libpq: "libpq".into(),
            transport: "unix socket".into(),
            crates: Vec::new(),
            python: None,
            mode: "test".into(),
            args: String::new(),
            reps: 3,
            load: String::new(),
            load_end: String::new(),
            pinning: String::new(),
            multi: "not run (test)".into(),
            main_runtime: "current".into(),
            libpq_source: "test".into(),
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// A client's result: three runs of `ms` milliseconds, with `checksum`, or an error.
    fn run(client: Client, ms: u64, checksum: i64, error: Option<&str>) -> Measured {
        Measured {
            client,
            rt: Rt::Main,
            how: "test".into(),
            times: vec![Duration::from_millis(ms); 3],
            error: error.map(str::to_owned),
            checksum: Some(checksum),
        }
    }

    fn variant(id: &'static str, measured: Vec<Measured>) -> VariantResult {
        VariantResult {
            id,
            title: "test".into(),
            unit: "runs".into(),
            measured,
            missing: Vec::new(),
            checksum_note: None,
            volume: None,
        }
    }

    fn goal<'g>(goals: &'g [Goal], starts: &str) -> &'g Goal {
        goals
            .iter()
            .find(|g| g.line.starts_with(starts))
            .unwrap_or_else(|| panic!("no goal {starts:?} in {goals:?}"))
    }

    #[test]
    fn a_clean_run_that_meets_its_goals_passes_enforcement() {
        let env = env();
        let results = [variant(
            "W1",
            vec![
                run(Client::C, 100, 42, None),
                run(Client::PqlibSync, 102, 42, None),
            ],
        )];
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(report.failures().is_empty());
        let goals = report.goals();
        assert!(goal(&goals, "pqlib within").met());
        let x = ratio(&results[0], Client::PqlibSync).expect("a ratio");
        assert!((x - 1.02).abs() < 1e-9, "{x}");
        assert!(report.verdict().is_ok());
        assert!(crate::enforce(true, report.verdict()).is_ok());
        assert!(!report.markdown().contains("FAILED"));
    }

    #[test]
    fn an_errored_client_is_a_failure_and_its_times_do_not_count() {
        let env = env();
        // Faster than C, but it failed: its time must not meet the goal.
        let results = [variant(
            "W1",
            vec![
                run(Client::C, 100, 42, None),
                run(Client::PqlibSync, 50, 42, Some("connection lost")),
            ],
        )];
        let report = Report {
            env: &env,
            results: &results,
        };
        assert_eq!(
            report.failures(),
            ["W1 pqlib: error: connection lost".to_owned()]
        );
        assert_eq!(ratio(&results[0], Client::PqlibSync), None);
        let goals = report.goals();
        let within = goal(&goals, "pqlib within");
        assert!(!within.met(), "{within:?}");
        assert!(within.line.contains("W1 FAILED"), "{within:?}");
        let md = report.markdown();
        assert!(md.contains("## Failures"), "{md}");
        assert!(md.contains("FAILED: error: connection lost"), "{md}");
        assert!(report.verdict().is_err());
        assert!(crate::enforce(true, report.verdict()).is_err());
        // Without the flag the report shows it and the run still succeeds.
        assert!(crate::enforce(false, report.verdict()).is_ok());
    }

    #[test]
    fn a_checksum_other_than_cs_is_a_failure_and_its_times_do_not_count() {
        let env = env();
        let results = [variant(
            "W3",
            vec![
                run(Client::C, 100, 42, None),
                run(Client::PqlibSync, 50, 41, None),
                run(Client::Postgres, 120, 42, None),
            ],
        )];
        let report = Report {
            env: &env,
            results: &results,
        };
        assert_eq!(
            report.failures(),
            ["W3 pqlib: wrong result: checksum 41, C's 42".to_owned()]
        );
        assert_eq!(ratio(&results[0], Client::PqlibSync), None);
        assert_eq!(median(&results[0], Client::PqlibSync), None);
        let goals = report.goals();
        assert!(!goal(&goals, "pqlib within").met());
        let faster = goal(&goals, "pqlib faster than postgres");
        assert!(!faster.met(), "{faster:?}");
        assert!(
            faster.line.contains("not compared (pqlib FAILED)"),
            "{faster:?}"
        );
        assert!(report.markdown().contains("FAILED: wrong result"));
        let json = report.json();
        assert!(json.contains("wrong result: checksum 41"), "{json}");
        assert!(crate::enforce(true, report.verdict()).is_err());
    }

    #[test]
    fn a_failed_peer_or_c_leaves_the_goal_unmet_not_silently_met() {
        let env = env();
        let results = [variant(
            "W4a",
            vec![
                run(Client::C, 100, 7, Some("C failed")),
                run(Client::PqlibSync, 101, 7, None),
                run(Client::Postgres, 150, 7, Some("peer failed")),
            ],
        )];
        let report = Report {
            env: &env,
            results: &results,
        };
        assert_eq!(report.failures().len(), 2);
        let goals = report.goals();
        let within = goal(&goals, "pqlib within");
        assert!(
            !within.met() && within.line.contains("C FAILED"),
            "{within:?}"
        );
        let faster = goal(&goals, "pqlib faster than postgres");
        assert!(
            !faster.met() && faster.line.contains("postgres FAILED"),
            "{faster:?}"
        );
    }

    #[test]
    fn a_missed_goal_fails_enforcement_without_any_failure() {
        let env = env();
        let results = [variant(
            "W1",
            vec![
                run(Client::C, 100, 42, None),
                run(Client::PqlibSync, 200, 42, None),
            ],
        )];
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(report.failures().is_empty());
        let goals = report.goals();
        let within = goal(&goals, "pqlib within");
        assert!(
            !within.met() && within.line.contains("W1 2.00×"),
            "{within:?}"
        );
        assert!(crate::enforce(true, report.verdict()).is_err());
        assert!(crate::enforce(false, report.verdict()).is_ok());
    }

    /// A row with these run times (ms) on runtime `rt`, checksum 1.
    fn runs(client: Client, rt: Rt, ms: &[u64]) -> Measured {
        Measured {
            client,
            rt,
            how: "test".into(),
            times: ms.iter().map(|&t| Duration::from_millis(t)).collect(),
            error: None,
            checksum: Some(1),
        }
    }

    /// A run meeting every goal of issue 16: C at 100 ms (spread 5 % on W1 and W7b), the
    /// clients at the given times (ms) on every workload.
    fn issue16_run(tokio: u64, tokio_pg: u64, multi: u64) -> Vec<VariantResult> {
        let ids = [
            "W1", "W2", "W3", "W3s", "W4a", "W4c", "W4d", "W5", "W6p", "W6s", "W7a", "W7b",
        ];
        ids.iter()
            .map(|&id| {
                let mut rows = vec![
                    runs(Client::C, Rt::Main, &[98, 100, 103]),
                    runs(Client::PqlibSync, Rt::Main, &[103]),
                    runs(Client::PqlibAsync, Rt::Main, &[tokio]),
                    runs(Client::TokioPostgres, Rt::Main, &[tokio_pg]),
                ];
                if id == "W1" || id == "W7b" {
                    rows.push(runs(Client::PqlibAsync, Rt::Multi, &[multi]));
                    rows.push(runs(Client::TokioPostgres, Rt::Multi, &[tokio_pg]));
                }
                variant(id, rows)
            })
            .collect()
    }

    /// Sets the pqlib::tokio main median of workload `id` to `ms`.
    fn set(results: &mut [VariantResult], id: &str, client: Client, rt: Rt, ms: u64) {
        let r = results.iter_mut().find(|r| r.id == id).expect("variant");
        let m = r
            .measured
            .iter_mut()
            .find(|m| m.client == client && m.rt == rt)
            .expect("row");
        m.times = vec![Duration::from_millis(ms)];
    }

    #[test]
    fn issue16_goals_met() {
        let env = env();
        // 1.04× C everywhere (≤ 1.05 for the tightest, W5), 0.80× tokio-postgres; the
        // multi-thread row 3 % slower than the current-thread one, within C's 5 % spread.
        let results = issue16_run(104, 130, 107);
        let report = Report {
            env: &env,
            results: &results,
        };
        let goals = report.goals16();
        assert_eq!(goals.len(), 9);
        for g in &goals {
            assert_eq!(g.verdict, Verdict::Met, "{g:?}");
            assert!(g.line.contains("**met**"), "{g:?}");
        }
        let rtt = goal(&goals, "pqlib::tokio at most 1.20× C");
        assert!(
            rtt.line
                .contains("W1 1.04× (met), W2 1.04× (met), W4a 1.04× (met), W6s 1.04× (met)"),
            "{rtt:?}"
        );
        let faster = goal(&goals, "pqlib::tokio at least 15 %");
        assert!(faster.line.contains("W1 0.80× (met)"), "{faster:?}");
        let multi = goal(&goals, "pqlib::tokio on a multi-thread runtime");
        assert!(
            multi
                .line
                .contains("W1 1.07× C multi-thread vs 1.04× current-thread (+2.9%, noise 5.0%)"),
            "{multi:?}"
        );
        assert!(report.verdict().is_ok(), "{:?}", report.verdict());
        let md = report.markdown();
        assert!(
            md.contains("## Goals of issue 16, checked against these numbers"),
            "{md}"
        );
        assert!(md.contains("## W1 / W7b on a multi-thread runtime"), "{md}");
        assert!(
            md.contains("| W1 | pqlib::tokio | 104 ms **1.04×** | 107 ms **1.07×** | +2.9% |"),
            "{md}"
        );
        assert!(
            md.contains("| pqlib::tokio (multi-thread runtime) |"),
            "{md}"
        );
        assert!(report.json().contains("goals_issue16"));
    }

    #[test]
    fn issue16_goals_missed() {
        let env = env();
        let mut results = issue16_run(104, 130, 107);
        // W1 at 1.25× C and 0.96× tokio-postgres; W5 at 1.06× (over its 1.05×); W7b slower
        // than tokio-postgres; pqlib W4d at 1.06×; the multi-thread row of W7b 6 % slower
        // than the current-thread one, over C's 5 % spread.
        set(&mut results, "W1", Client::PqlibAsync, Rt::Main, 125);
        set(&mut results, "W1", Client::PqlibAsync, Rt::Multi, 125);
        set(&mut results, "W5", Client::PqlibAsync, Rt::Main, 106);
        set(&mut results, "W7b", Client::PqlibAsync, Rt::Main, 131);
        set(&mut results, "W7b", Client::PqlibAsync, Rt::Multi, 139);
        set(&mut results, "W4d", Client::PqlibSync, Rt::Main, 106);
        let report = Report {
            env: &env,
            results: &results,
        };
        let goals = report.goals16();
        let verdict = |starts: &str| goal(&goals, starts).verdict;
        let rtt = goal(&goals, "pqlib::tokio at most 1.20× C");
        assert_eq!(rtt.verdict, Verdict::Missed);
        assert!(
            rtt.line
                .contains("**missed** — W1 1.25× (missed), W2 1.04× (met)"),
            "{rtt:?}"
        );
        let faster = goal(&goals, "pqlib::tokio at least 15 %");
        assert_eq!(faster.verdict, Verdict::Missed);
        assert!(faster.line.contains("W1 0.96× (missed)"), "{faster:?}");
        assert_eq!(
            verdict("pqlib::tokio at most 1.05× C on W5"),
            Verdict::Missed
        );
        assert_eq!(verdict("pqlib::tokio at most 1.10× C on W3s"), Verdict::Met);
        assert_eq!(
            verdict("pqlib::tokio faster than tokio-postgres on W7a"),
            Verdict::Missed
        );
        assert_eq!(verdict("pqlib at most 1.05× C on W3, W4d"), Verdict::Missed);
        let multi = goal(&goals, "pqlib::tokio on a multi-thread runtime");
        assert_eq!(multi.verdict, Verdict::Missed);
        // W1: 1.25× on both runtimes, met; W7b: 1.39× against 1.31×, +6.1 % > 5 %.
        assert!(
            multi.line.contains("(+0.0%, noise 5.0%) (met)"),
            "{multi:?}"
        );
        assert!(
            multi.line.contains(
                "W7b 1.39× C multi-thread vs 1.31× current-thread (+6.1%, noise 5.0%) (missed)"
            ),
            "{multi:?}"
        );
        assert!(report.failures().is_empty());
        let wrong = report.verdict().expect_err("missed goals");
        assert!(
            wrong.contains("pqlib::tokio at most 1.05× C on W5"),
            "{wrong}"
        );
        assert!(crate::enforce(true, report.verdict()).is_err());
        assert!(crate::enforce(false, report.verdict()).is_ok());
    }

    #[test]
    fn w8_paragraph_compares_never_prepare_and_pgbouncer_with_w1_w2() {
        let env = env();
        let both = |id: &'static str, c: u64, ours: u64| {
            variant(
                id,
                vec![
                    run(Client::C, c, 1, None),
                    run(Client::PqlibSync, ours, 1, None),
                ],
            )
        };
        // pqlib: W1 100 ms, W8a 110 ms (+10 %), W8b 165 ms (+50 % over W8a); W2 200 ms, W8c
        // 230 ms (+15 %), W8d 276 ms (+20 %).
        let mut results = vec![
            both("W1", 95, 100),
            both("W2", 190, 200),
            both("W8a", 100, 110),
            both("W8b", 150, 165),
            both("W8c", 220, 230),
            both("W8d", 264, 276),
        ];
        let report = Report {
            env: &env,
            results: &results,
        };
        let md = report.markdown();
        assert!(md.contains("| **W8a** test (runs) |"), "{md}");
        assert!(
            md.contains(
                "- pqlib: never-prepare costs +10.0 % over a cached named statement, direct \
                 (W8a over W1; W8c over W2: +15.0 %); PgBouncer adds +50.0 % (W8b over W8a; \
                 W8d over W8c: +20.0 %)."
            ),
            "{md}"
        );
        assert!(md.contains("- C libpq: PQexecParams costs +5.3 %"), "{md}");
        // `--only W8`: nothing to compare with directly; a failed run is not measured.
        results.retain(|r| r.id.starts_with("W8"));
        results[1].measured[1].error = Some("connection lost".into());
        let report = Report {
            env: &env,
            results: &results,
        };
        let md = report.markdown();
        assert!(
            md.contains(
                "- pqlib: never-prepare costs not measured over a cached named statement, \
                 direct (W8a over W1; W8c over W2: not measured); PgBouncer adds not measured \
                 (W8b over W8a; W8d over W8c: +20.0 %)."
            ),
            "{md}"
        );
        // Only W8a: nothing to compare, and the paragraph says so.
        results.truncate(1);
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(
            report
                .markdown()
                .contains("**W8, never-prepare and PgBouncer**: nothing to compare"),
            "{}",
            report.markdown()
        );
        // No W8 at all: no paragraph.
        results.retain(|r| !r.id.starts_with("W8"));
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(!report.markdown().contains("**W8"));
    }

    #[test]
    fn w9_paragraph_gives_rows_and_megabytes_per_second_and_the_issue18_goal() {
        let env = env();
        let rows = 1_000_000;
        let stream = |id: &'static str, times: [u64; 3], bytes: u64, what: &str| {
            let mut r = variant(
                id,
                vec![
                    run(Client::C, times[0], rows, None),
                    run(Client::PqlibSync, times[1], rows, None),
                    run(Client::PqlibAsync, times[2], rows, None),
                ],
            );
            r.volume = Some(crate::Volume {
                rows: rows as u64,
                bytes,
                what: what.into(),
                c_bytes: 150_000_000,
                c_what: "test_decoding text".into(),
            });
            r
        };
        // W9a: 150 MB of text for everyone; W9b: 80 MB of pgoutput for pqlib, C still
        // receives the 150 MB of text.
        let mut results = vec![
            stream("W9a", [2000, 2500, 2600], 150_000_000, "test_decoding text"),
            stream("W9b", [2000, 1600, 2100], 80_000_000, "pgoutput, binary"),
        ];
        let report = Report {
            env: &env,
            results: &results,
        };
        let md = report.markdown();
        assert!(md.contains("**W9, logical decoding throughput**"), "{md}");
        assert!(
            md.contains(
                "- W9a (1000000 rows; test_decoding text, 150.0 MB): C libpq 500 k rows/s, \
                 75.0 MB/s; pqlib 400 k rows/s, 60.0 MB/s; pqlib::tokio 385 k rows/s, 57.7 MB/s."
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- W9b (1000000 rows; pgoutput, binary, 80.0 MB; C: test_decoding text, 150.0 \
                 MB): C libpq 500 k rows/s, 75.0 MB/s; pqlib 625 k rows/s, 50.0 MB/s; \
                 pqlib::tokio 476 k rows/s, 38.1 MB/s."
            ),
            "{md}"
        );
        // The goal: pqlib 0.80× C, pqlib::tokio 1.05×: missed.
        let goals = report.goals18();
        assert_eq!(goals.len(), 1);
        assert_eq!(goals[0].verdict, Verdict::Missed);
        assert!(
            goals[0]
                .line
                .ends_with("**missed** — pqlib W9b 0.80× (met), pqlib::tokio W9b 1.05× (missed)"),
            "{}",
            goals[0].line
        );
        assert!(md.contains("## Goal of issue 18, checked against these numbers"));
        assert!(report.verdict().is_err());
        // Both at most 1.00×: met; in M rows/s above a million a second.
        set(&mut results, "W9b", Client::PqlibAsync, Rt::Main, 2000);
        set(&mut results, "W9b", Client::PqlibSync, Rt::Main, 500);
        let report = Report {
            env: &env,
            results: &results,
        };
        assert_eq!(report.goals18()[0].verdict, Verdict::Met);
        assert!(
            report
                .markdown()
                .contains("; pqlib 2.00 M rows/s, 160.0 MB/s;"),
            "{}",
            report.markdown()
        );
        // A failed client is not measured, and misses the goal.
        results[1].measured[1].error = Some("connection lost".into());
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(report.markdown().contains("; pqlib not measured;"));
        let goal = &report.goals18()[0];
        assert_eq!(goal.verdict, Verdict::Missed);
        assert!(goal.line.contains("W9b pqlib FAILED"), "{}", goal.line);
        // No W9: no paragraph, the goal not run.
        results.clear();
        let report = Report {
            env: &env,
            results: &results,
        };
        assert!(!report.markdown().contains("**W9"));
        assert_eq!(report.goals18()[0].verdict, Verdict::NotRun);
        assert!(report.verdict().is_ok());
    }

    #[test]
    fn issue16_goals_of_workloads_not_run_say_not_run() {
        let env = env();
        // `--only W3`: only pqlib's W3/W4d goal has a workload, and meets it there.
        let results: Vec<VariantResult> = issue16_run(104, 130, 107)
            .into_iter()
            .filter(|r| r.id == "W3")
            .collect();
        let report = Report {
            env: &env,
            results: &results,
        };
        let goals = report.goals16();
        let w3 = goal(&goals, "pqlib at most 1.05× C on W3, W4d");
        assert_eq!(w3.verdict, Verdict::Met, "{w3:?}");
        assert!(w3.line.contains("W3 1.03× (met), W4d not run"), "{w3:?}");
        for g in goals
            .iter()
            .filter(|g| !g.line.starts_with("pqlib at most"))
        {
            assert_eq!(g.verdict, Verdict::NotRun, "{g:?}");
            assert!(g.line.contains("**not run**"), "{g:?}");
        }
        // Not run is neither met nor missed: enforcement passes.
        assert!(report.verdict().is_ok(), "{:?}", report.verdict());
        let md = report.markdown();
        assert!(md.contains("**not run**"), "{md}");
        assert!(
            !md.contains("## W1 / W7b on a multi-thread runtime"),
            "{md}"
        );
    }

    #[test]
    fn issue16_multi_thread_goal_not_run_without_its_rows_and_missed_when_they_fail() {
        let env = env();
        // `--no-multi`: no multi-thread rows.
        let mut results = issue16_run(104, 130, 107);
        for r in &mut results {
            r.measured.retain(|m| m.rt == Rt::Main);
        }
        let report = Report {
            env: &env,
            results: &results,
        };
        let goals = report.goals16();
        let multi = goal(&goals, "pqlib::tokio on a multi-thread runtime");
        assert_eq!(multi.verdict, Verdict::NotRun, "{multi:?}");
        assert!(
            multi
                .line
                .contains("W1: pqlib::tokio on a multi-thread runtime not run"),
            "{multi:?}"
        );
        let md = report.markdown();
        assert!(md.contains("Not run (test)."), "{md}");

        // The main runtime is already multi-thread: nothing to compare against.
        let mut multi_env = self::env();
        multi_env.main_runtime = "multi".into();
        let report = Report {
            env: &multi_env,
            results: &results,
        };
        let goals = report.goals16();
        assert_eq!(
            goal(&goals, "pqlib::tokio on a multi-thread runtime").verdict,
            Verdict::NotRun
        );

        // A multi-thread row that failed is a failure, and misses the goal.
        let mut results = issue16_run(104, 130, 107);
        let w1 = results.iter_mut().find(|r| r.id == "W1").expect("W1");
        let row = w1
            .measured
            .iter_mut()
            .find(|m| m.rt == Rt::Multi && m.client == Client::PqlibAsync)
            .expect("row");
        row.error = Some("connection lost".into());
        let report = Report {
            env: &env,
            results: &results,
        };
        assert_eq!(
            report.failures(),
            ["W1 pqlib::tokio (multi-thread runtime): error: connection lost".to_owned()]
        );
        let goals = report.goals16();
        let multi = goal(&goals, "pqlib::tokio on a multi-thread runtime");
        assert_eq!(multi.verdict, Verdict::Missed, "{multi:?}");
        assert!(
            multi
                .line
                .contains("W1 pqlib::tokio (multi-thread runtime) FAILED"),
            "{multi:?}"
        );
        // Its failure does not touch the main row's goals.
        assert_eq!(
            goal(&goals, "pqlib::tokio at most 1.20× C").verdict,
            Verdict::Met
        );
        assert!(
            report
                .markdown()
                .contains("| W1 | pqlib::tokio | 104 ms **1.04×** | FAILED |  |")
        );
    }

    #[test]
    fn issue16_a_failed_client_misses_the_goal() {
        let env = env();
        let mut results = issue16_run(104, 130, 107);
        let w6s = results.iter_mut().find(|r| r.id == "W6s").expect("W6s");
        let tpg = w6s
            .measured
            .iter_mut()
            .find(|m| m.client == Client::TokioPostgres)
            .expect("row");
        tpg.checksum = Some(2);
        let report = Report {
            env: &env,
            results: &results,
        };
        let goals = report.goals16();
        let faster = goal(&goals, "pqlib::tokio at least 15 %");
        assert_eq!(faster.verdict, Verdict::Missed, "{faster:?}");
        assert!(
            faster.line.contains("W6s tokio-postgres FAILED"),
            "{faster:?}"
        );
        // The C comparison of pqlib::tokio there is untouched.
        assert_eq!(
            goal(&goals, "pqlib::tokio at most 1.20× C").verdict,
            Verdict::Met
        );
    }
}
