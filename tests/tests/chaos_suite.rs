//! The chaos suite in its short form (`jet chaos --short`, same library code): every cell
//! runs a steady load on a private cluster with `jet-api` and three `jet-worker` processes,
//! injects its fault, and must end with nothing lost, nothing duplicated, and a new run
//! completed after the fault healed.

use jet::chaos::cells::Cell;
use jet::chaos::{Form, TABLE_HEADER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_ends_with_nothing_lost_or_duplicated() {
    let bin_dir = jet_tests::bins::path("jet-worker")
        .parent()
        .expect("binary folder")
        .to_owned();
    let logs =
        std::env::temp_dir().join(format!("jet-chaos-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).expect("log folder");
    let started = std::time::Instant::now();
    let rows = jet::chaos::run(&bin_dir, &logs, &Form::short(), &Cell::ALL, |row| {
        eprintln!("{row}")
    })
    .await
    .expect("the suite runs");
    eprintln!(
        "{TABLE_HEADER}\n{}\n{} cells in {:.0} s, process logs in {}",
        rows.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        rows.len(),
        started.elapsed().as_secs_f64(),
        logs.display()
    );
    assert_eq!(rows.len(), Cell::ALL.len());
    for row in &rows {
        // The load really ran through the fault: runs before and after it.
        assert!(row.ledger.instances >= 20, "{row}");
        assert!(row.passed(), "{row}\n{:?}", row.ledger);
    }
    let _ = std::fs::remove_dir_all(&logs);
}
