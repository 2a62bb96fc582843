//! Bad input outside the web server: RQ files with ragged columns, missing
//! datasets, wrong types or indexes past their rows, read by the RQ reader
//! and by `unsalt`; numeric options that would overflow, given to the real
//! binary (exit code 2 and a message naming the option).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use tpcflow::rq::{read_rq_file, ColumnData, RqError};
use tpcflow::salt::unsalt::{filter, UnsaltError};

use crate::common::{scratch, tpcflow_bin};
use crate::web_hardening::{bad_rq_files, good_rq, BAD_RQ};

#[test]
fn rq_reader_names_the_file_and_dataset_of_bad_rq_files() {
    let dir = scratch("bad-rq");
    let files = bad_rq_files(dir.path());
    for ((name, needle), path) in BAD_RQ.iter().zip(&files) {
        if *name == "no_event_id" {
            // Readable as a file of other columns; the event index needs it.
            let rq = read_rq_file(path).unwrap();
            assert!(rq.event_column("event_id").is_none());
            let e = tpcflow::rq::read_event_ids(path).unwrap_err();
            assert!(e.to_string().contains(needle), "{name}: {e}");
            continue;
        }
        let e = read_rq_file(path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{name}: wants `{needle}`: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
        let kind_ok = match *name {
            "ragged" => matches!(e, RqError::Ragged { .. }),
            "float_index" => matches!(e, RqError::Schema { .. }),
            _ => matches!(e, RqError::BadIndex { .. }),
        };
        assert!(kind_ok, "{name}: {e:?}");
    }
}

#[test]
fn unsalt_refuses_ragged_columns_and_indexes_past_their_rows() {
    let dir = scratch("bad-unsalt");
    let path = dir.path().join("good.rq.h5");
    good_rq(&path);
    let good = read_rq_file(&path).unwrap();
    let salt: HashSet<u64> = [0].into();
    let kept = filter(&good, &salt, &HashMap::new(), &path).unwrap();
    assert_eq!((kept.events_in, kept.events_out), (2, 1));
    // A column shorter than its group (as a caller might assemble one).
    let mut ragged = good.clone();
    let kind = ragged.pulses.iter_mut().find(|c| c.name == "kind").unwrap();
    kind.data = ColumnData::U8(vec![1]);
    let e = filter(&ragged, &salt, &HashMap::new(), &path).unwrap_err();
    assert!(
        matches!(e, UnsaltError::Rq(RqError::Ragged { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("/pulses/kind has 1 rows"), "{e}");
    // An event whose pulses run past /pulses.
    let mut past = good.clone();
    let n = past
        .events
        .iter_mut()
        .find(|c| c.name == "n_pulses")
        .unwrap();
    n.data = ColumnData::U32(vec![1, u32::MAX]);
    let e = filter(&past, &salt, &HashMap::new(), &path).unwrap_err();
    assert!(
        matches!(e, UnsaltError::Rq(RqError::BadIndex { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("good.rq.h5"), "{e}");
    assert!(e.to_string().contains("/events/first_pulse row 1"), "{e}");
    // A pulse whose channel areas run past /channels.
    let mut ch = good.clone();
    let f = ch
        .pulses
        .iter_mut()
        .find(|c| c.name == "first_channel")
        .unwrap();
    f.data = ColumnData::U64(vec![0, 1, 1 << 40]);
    let e = filter(&ch, &salt, &HashMap::new(), &path).unwrap_err();
    assert!(e.to_string().contains("/pulses/first_channel row 2"), "{e}");
}

/// Run `tpcflow args`; (exit code, stderr).
fn tpcflow(args: &[&str], dir: &Path) -> (i32, String) {
    let out = Command::new(tpcflow_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("TPCFLOW_DATA_ROOT")
        .env_remove("TPCFLOW_WEB_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn numeric_options_that_would_overflow_exit_2_naming_the_option() {
    let dir = scratch("bad-options");
    let d = dir.path();
    let table: &[(&[&str], &str)] = &[
        (
            &["serve", "--catalog", "c", "--cache-seconds", "1e300"],
            "--cache-seconds",
        ),
        (
            &["serve", "--catalog", "c", "--cache-seconds", "NaN"],
            "--cache-seconds",
        ),
        (
            &["serve", "--catalog", "c", "--cache-seconds=-1"],
            "--cache-seconds",
        ),
        (&["serve", "--catalog", "c", "--threads", "0"], "--threads"),
        (
            &["dispatch", "--catalog", "c", "--once", "--interval", "inf"],
            "--interval",
        ),
        (
            &["sim", "--run", "1", "--out", "o", "--rate", "0"],
            "--rate",
        ),
        (
            &[
                "sim",
                "--run",
                "1",
                "--out",
                "o",
                "--first-sequence",
                "4294967295",
            ],
            "--first-sequence",
        ),
        (
            &["sim", "--run", "1", "--out", "o", "--files", "0"],
            "--files",
        ),
        (
            &["sim", "--run", "1", "--out", "o", "--threads", "0"],
            "--threads",
        ),
        (
            &["transfer", "--catalog", "c", "--parallel", "0"],
            "--parallel",
        ),
        (
            &["transfer", "--catalog", "c", "--max-attempts", "0"],
            "--max-attempts",
        ),
        (
            &[
                "audit",
                "--catalog",
                "c",
                "--site",
                "USDC",
                "--max-missing-fraction",
                "2",
            ],
            "--max-missing-fraction",
        ),
        (
            &["reco", "--out-dir", "o", "--inputs", "x", "--batch", "0"],
            "--batch",
        ),
        (
            &[
                "reco",
                "--out-dir",
                "o",
                "--inputs",
                "x",
                "--events-per-unit",
                "0",
            ],
            "--events-per-unit",
        ),
        (
            &[
                "salt", "keygen", "--key", "k", "--vault", "v", "--rate", "nan",
            ],
            "--rate",
        ),
        (
            &["mpi-selftest", "--out", "o", "--expect-size", "0"],
            "--expect-size",
        ),
    ];
    for (args, option) in table {
        let (code, err) = tpcflow(args, d);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("invalid value") && err.contains(option),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        0,
        "nothing was created"
    );
}
