//! psycopg 3, the cross-language reference: `python/bench_psycopg.py` run as a subprocess
//! once per measured run; it times itself (after its own warm-up) and prints JSON.
//!
//! psycopg is installed from PyPI (`psycopg[binary]`) into `target/python` when Python is
//! present and it is not importable yet; without Python or pip it is reported as missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Result;

pub struct Python {
    exe: String,
    /// Where psycopg was installed, if the harness installed it.
    site: Option<PathBuf>,
    script: PathBuf,
    /// psycopg's version, implementation and libpq version.
    pub version: String,
}

impl Python {
    /// Finds Python with psycopg, installing psycopg if needed; the error says what is missing.
    pub fn find() -> Result<Python, String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("python/bench_psycopg.py");
        let site = root.join("target/python");
        let exe = ["python3", "python"]
            .into_iter()
            .find(|exe| {
                Command::new(exe)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .ok_or("no python3 in PATH")?
            .to_owned();
        let mut python = Python {
            exe,
            site: Some(site.clone()),
            script,
            version: String::new(),
        };
        if let Ok(version) = python.probe() {
            python.version = version;
            return Ok(python);
        }
        eprintln!(
            "psycopg: installing psycopg[binary] into {}",
            site.display()
        );
        let installed = Command::new(&python.exe)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&site)
            .arg("psycopg[binary]")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("running pip: {e}"))?;
        if !installed.success() {
            return Err(format!("pip install psycopg[binary] failed ({installed})"));
        }
        python.version = python
            .probe()
            .map_err(|e| format!("psycopg installed but not importable: {e}"))?;
        Ok(python)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        if let Some(site) = &self.site {
            let path = match std::env::var_os("PYTHONPATH") {
                Some(old) => {
                    let mut paths = vec![site.clone()];
                    paths.extend(std::env::split_paths(&old));
                    std::env::join_paths(paths).unwrap_or_else(|_| site.clone().into())
                }
                None => site.clone().into(),
            };
            command.env("PYTHONPATH", path);
        }
        command
    }

    fn probe(&self) -> Result<String, String> {
        let output = self
            .command()
            .arg(&self.script)
            .arg("--version")
            .stderr(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err("psycopg is not importable".into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    pub fn describe(&self) -> &str {
        &self.version
    }

    /// Runs one workload once (after a warm-up inside the process) and returns the checksum
    /// and the time the script measured.
    pub fn run(
        &self,
        conninfo: &str,
        workload: &str,
        n: usize,
        warm: bool,
    ) -> Result<(i64, Duration)> {
        let output = self
            .command()
            .arg(&self.script)
            .args(["--conninfo", conninfo, "--workload", workload, "--n"])
            .arg(n.to_string())
            .args(if warm { &["--no-warmup"][..] } else { &[][..] })
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "bench_psycopg.py failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let seconds = json["seconds"].as_f64().ok_or("no seconds in the output")?;
        let checksum = json["checksum"]
            .as_i64()
            .ok_or("no checksum in the output")?;
        Ok((checksum, Duration::from_secs_f64(seconds)))
    }
}
