//! Killing a command at random points: the harness of the SIGKILL suites
//! (`tests/ops_kill.rs`, `tests/resize_kill.rs`).
//!
//! A suite first times an uninterrupted run of the command ([`timed`]: how long it took
//! and when each phase began, from its `--progress json` events), draws kill points from
//! a seeded sequence ([`kill_points`]), and then runs the command again on fresh copies,
//! killing each run with SIGKILL at one point ([`run_and_kill`]). What a kill may leave
//! is the suite's to judge.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// When to kill a run: `delay` after the spawn, or after the run's first progress event
/// of phase `after` (read from its `--progress json` output).
#[derive(Debug, Clone, Copy)]
pub struct KillAt {
    /// The phase to wait for first (`None`: count from the spawn).
    pub after: Option<&'static str>,
    /// How long to wait then.
    pub delay: Duration,
}

/// When an uninterrupted run's phases began (first progress event of each, from the
/// spawn) and how long it took.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The whole run, spawn to exit.
    pub total: Duration,
    /// Each phase's first progress event, from the spawn.
    pub phases: BTreeMap<String, Duration>,
}

impl Timing {
    /// When `phase` began (zero if the run never reported it).
    pub fn began(&self, phase: &str) -> Duration {
        self.phases.get(phase).copied().unwrap_or_default()
    }
}

/// The `phase` of a `--progress json` line, if it is one.
fn phase_of(line: &str) -> Option<String> {
    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
    v["phase"].as_str().map(str::to_owned)
}

/// Spawns `program args…` with stdin and stdout null and stderr piped.
fn spawn(program: &Path, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()))
}

/// Runs `program args…` (which ask for `--progress json`) to the end, timing its
/// phases; panics if it fails.
pub fn timed(program: &Path, args: &[&str]) -> Timing {
    let t = Instant::now();
    let mut child = spawn(program, args);
    let mut phases = BTreeMap::new();
    let stderr = child.stderr.take().expect("stderr");
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.expect("a line");
        if let Some(phase) = phase_of(&line) {
            phases.entry(phase).or_insert_with(|| t.elapsed());
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{args:?}: {status}");
    Timing {
        total: t.elapsed(),
        phases,
    }
}

/// Starts `program args…` (which ask for `--progress json`) and SIGKILLs it at `at`
/// unless it finished first. Returns whether the kill landed (the process died of
/// SIGKILL); a run that failed on its own fails the test.
pub fn run_and_kill(program: &Path, args: &[&str], at: KillAt) -> bool {
    let mut child = spawn(program, args);
    // Drain stderr to its end on another thread, reporting the phases as they start.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(phase) = phase_of(&line) {
                let _ = tx.send(phase);
            }
        }
    });
    if let Some(phase) = at.after {
        // Until the phase starts or the run ends (the channel closes).
        while let Ok(seen) = rx.recv() {
            if seen == phase {
                break;
            }
        }
    }
    std::thread::sleep(at.delay);
    let landed = match child.try_wait().expect("try_wait") {
        Some(status) => {
            assert!(status.success(), "{args:?} failed on its own: {status}");
            false
        }
        None => {
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("wait");
            // Otherwise it finished between try_wait and kill.
            assert!(
                status.signal() == Some(9) || status.success(),
                "{args:?}: {status}"
            );
            status.signal() == Some(9)
        }
    };
    reader.join().expect("stderr reader");
    landed
}

/// `n` kill points drawn from `rng`: every other one a delay after the spawn spread over
/// the whole run (`0.05..1.05 × total`, one per stratum, jittered); the others a delay
/// after the start of `phase`, the part that changes the image, spread over what
/// remained of the run from there (`0..1.05 ×`).
pub fn kill_points(timing: &Timing, phase: &'static str, n: usize, mut rng: Rng) -> Vec<KillAt> {
    let total = timing.total;
    let rest = total.saturating_sub(timing.began(phase));
    let halves = n.div_ceil(2) as f64;
    (0..n)
        .map(|i| {
            let stratum = ((i / 2) as f64 + rng.unit()) / halves;
            if i % 2 == 0 {
                KillAt {
                    after: None,
                    delay: total.mul_f64(0.05 + stratum),
                }
            } else {
                KillAt {
                    after: Some(phase),
                    delay: rest.mul_f64(1.05 * stratum),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(total_ms: u64, phase_ms: u64) -> Timing {
        Timing {
            total: Duration::from_millis(total_ms),
            phases: BTreeMap::from([("copy".to_owned(), Duration::from_millis(phase_ms))]),
        }
    }

    #[test]
    fn kill_points_alternate_from_the_spawn_and_from_the_phase_within_their_spans() {
        let t = timing(1000, 400);
        let points = kill_points(&t, "copy", 10, Rng::new(1));
        assert_eq!(points.len(), 10);
        for (i, k) in points.iter().enumerate() {
            if i % 2 == 0 {
                assert!(k.after.is_none());
                assert!(k.delay >= Duration::from_millis(50));
                assert!(k.delay <= Duration::from_millis(1050));
            } else {
                assert_eq!(k.after, Some("copy"));
                assert!(k.delay <= Duration::from_millis(630));
            }
        }
    }

    #[test]
    fn kill_points_repeat_for_the_same_seed() {
        let t = timing(500, 100);
        let a = kill_points(&t, "copy", 6, Rng::xorshift_star(3));
        let b = kill_points(&t, "copy", 6, Rng::xorshift_star(3));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn run_and_kill_kills_a_long_run_and_lets_a_short_one_finish() {
        let long = KillAt {
            after: None,
            delay: Duration::from_millis(50),
        };
        assert!(run_and_kill(Path::new("sleep"), &["30"], long));
        let short = KillAt {
            after: None,
            delay: Duration::from_millis(500),
        };
        assert!(!run_and_kill(Path::new("true"), &[], short));
    }

    #[test]
    fn timed_records_the_first_event_of_each_phase() {
        let script =
            r#"echo '{"phase":"a"}' >&2; echo '{"phase":"b"}' >&2; echo '{"phase":"a"}' >&2"#;
        let t = timed(Path::new("sh"), &["-c", script]);
        assert_eq!(t.phases.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(t.began("a") <= t.began("b"));
        assert_eq!(t.began("missing"), Duration::ZERO);
    }
}
