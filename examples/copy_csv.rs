//! Loads a CSV file into a table through `COPY … FROM STDIN (FORMAT csv)` and reports rows/s.
//!
//! ```sh
//! cargo run --release --example copy_csv                 # generates a 200k-row sample file
//! cargo run --release --example copy_csv -- data.csv     # your file: header line + columns
//! ```
//!
//! Without `DATABASE_URL` it starts a throwaway server. Your file's header names the columns;
//! every column is loaded as `text` into a new table `copy_csv_import`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use pqlib::Connection;
use pqlib::tempdb::TempCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = TempCluster::start()?;
            (server.conninfo(), Some(server))
        }
    };
    let given = std::env::args_os().nth(1).map(PathBuf::from);
    let path = match &given {
        Some(path) => path.clone(),
        None => sample_file(200_000)?,
    };
    let mut conn = Connection::connect(&conninfo)?;

    let mut file = BufReader::with_capacity(1 << 20, File::open(&path)?);
    let mut header = String::new();
    file.read_line(&mut header)?;
    let columns: Vec<String> = header
        .trim_end()
        .split(',')
        .map(|name| conn.escape_identifier(name.trim_matches('"')))
        .collect::<Result<_, _>>()?;
    let definitions: Vec<String> = columns.iter().map(|c| format!("{c} text")).collect();
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS copy_csv_import; CREATE UNLOGGED TABLE copy_csv_import ({})",
        definitions.join(", ")
    ))?;

    let started = Instant::now();
    let mut writer = conn.copy_in("COPY copy_csv_import FROM STDIN (FORMAT csv)")?;
    // The file's bytes go to the server as they are: CSV parsing happens there.
    let bytes = io::copy(&mut file, &mut writer)?;
    let rows = writer.finish()?;
    let elapsed = started.elapsed();
    println!(
        "loaded {rows} rows ({:.1} MB) from {} in {elapsed:.2?}: {:.0} rows/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        path.display(),
        rows as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    if given.is_none() {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// A CSV file with a header and quoted fields, in the temp dir.
fn sample_file(rows: usize) -> io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("pqlib-copy-csv-{}.csv", std::process::id()));
    let mut out = BufWriter::new(File::create(&path)?);
    writeln!(out, "id,name,comment,amount")?;
    for i in 0..rows {
        writeln!(
            out,
            "{i},name {i},\"a comment, with \"\"quotes\"\" {i}\",{}.{:02}",
            i * 3,
            i % 100
        )?;
    }
    out.flush()?;
    Ok(path)
}
