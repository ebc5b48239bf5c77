//! `jet chaos [--short] [--cell NAME]…`: the chaos suite on a private cluster with real
//! `jet-api` and `jet-worker` processes (the binaries beside this one); prints one table and
//! fails when a cell lost or duplicated work or did not recover.

use jet::chaos::cells::Cell;
use jet::chaos::{self, Form, TABLE_HEADER};
use std::path::PathBuf;

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let form = if args.iter().any(|a| a == "--short") {
        Form::short()
    } else {
        Form::full()
    };
    let mut cells = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a == "--cell" {
            let name = args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("--cell needs a name"))?;
            cells.push(Cell::named(name).ok_or_else(|| {
                let names: Vec<&str> = Cell::ALL.iter().map(|c| c.name()).collect();
                anyhow::anyhow!("unknown cell `{name}` (cells: {})", names.join(", "))
            })?);
        }
    }
    if cells.is_empty() {
        cells = Cell::ALL.to_vec();
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("no binary folder"))?;
    let logs =
        std::env::temp_dir().join(format!("jet-chaos-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs)?;
    eprintln!(
        "jet chaos: {} cell(s), {} runs/s, process logs in {}",
        cells.len(),
        form.rate,
        logs.display()
    );
    let started = std::time::Instant::now();
    let rows = chaos::run(&bin_dir, &logs, &form, &cells, |row| {
        eprintln!("{row}");
    })
    .await?;
    println!("\n{TABLE_HEADER}");
    for row in &rows {
        println!("{row}");
    }
    println!(
        "\n{} cells in {:.0} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.cell.name())
        .collect();
    anyhow::ensure!(failed.is_empty(), "cells failed: {}", failed.join(", "));
    Ok(())
}
