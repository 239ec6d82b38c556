//! Who may run what: the limits an execution gets (asked for, else the defaults, within the
//! API key's maxima), a group's settings and graph, and the key's quota of executions at once.

use std::time::Duration;

use crate::auth::Quota;
use crate::error::{Error, Result};
use crate::exec::request::{GroupRequest, Limits, NewGroup, NewProgram, RequestedLimits};
use crate::store::Queue;

/// Longest time limit anyone may ask for.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Checks one limit against the key's maximum; fills in the default when not asked for.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    asked: Option<T>,
    default: T,
    max: Option<T>,
    field: &str,
    key_limit: &str,
) -> Result<T> {
    match (asked, max) {
        (Some(a), Some(m)) if a > m => Err(Error::OverKeyLimit(format!(
            "limits.{field} = {a} is over this API key's {key_limit} of {m}"
        ))),
        (Some(a), _) => Ok(a),
        (None, Some(m)) if default > m => Ok(m),
        (None, _) => Ok(default),
    }
}

/// The limits an execution runs with. The defaults are the core's own (`sandbox::Limits`).
pub fn effective_limits(asked: &RequestedLimits, quota: &Quota) -> Result<Limits> {
    let d = sandbox::Limits::default();
    let secs = |x: Option<Duration>| x.map_or(MAX_SECONDS, |d| d.as_secs_f64());
    for (name, v) in [
        ("cpu_time_s", asked.cpu_time_s),
        ("wall_time_s", asked.wall_time_s),
    ] {
        if let Some(x) = v {
            if !(x > 0.0 && x <= MAX_SECONDS) {
                return Err(Error::Invalid(format!(
                    "limits.{name} must be more than 0 and at most {MAX_SECONDS} seconds"
                )));
            }
        }
    }
    for (name, v) in [
        ("memory_bytes", asked.memory_bytes),
        ("pids", asked.pids),
        ("output_bytes", asked.output_bytes),
    ] {
        if v == Some(0) {
            return Err(Error::Invalid(format!("limits.{name} must be more than 0")));
        }
    }
    Ok(Limits {
        memory_bytes: within(
            asked.memory_bytes,
            d.memory_bytes.unwrap_or(256 << 20),
            quota.max_memory,
            "memory_bytes",
            "max_memory",
        )?,
        cpu_time_s: within(
            asked.cpu_time_s,
            secs(d.cpu_time),
            quota.max_time,
            "cpu_time_s",
            "max_time",
        )?,
        wall_time_s: within(
            asked.wall_time_s,
            secs(d.wall_time),
            quota.max_time,
            "wall_time_s",
            "max_time",
        )?,
        pids: asked.pids.or(d.pids).unwrap_or(64),
        output_bytes: asked.output_bytes.or(d.output_bytes).unwrap_or(16 << 20),
    })
}

/// A group's settings, checked before anything runs: its wall limit (asked for, else the
/// longest of its programs', within the key's `max_time`), and its graph, by the core's own
/// rules (`sandbox::Group::validate`: the error names the pipe). A program's `stdin` and a pipe
/// into its fd 0 are one too many. The request it returns has no programs yet.
pub fn group_settings(
    g: &NewGroup,
    programs: &[NewProgram],
    limits: &[Limits],
    quota: &Quota,
) -> Result<GroupRequest> {
    let longest = limits.iter().map(|l| l.wall_time_s).fold(0.0, f64::max);
    let wall = match g.wall_time_s {
        None => longest,
        Some(w) if w > MAX_SECONDS => {
            return Err(Error::Invalid(format!(
                "'wall_time_s' must be at most {MAX_SECONDS} seconds"
            )))
        }
        Some(w) => match quota.max_time {
            Some(max) if w > max => {
                return Err(Error::OverKeyLimit(format!(
                    "wall_time_s = {w} is over this API key's max_time of {max}"
                )))
            }
            _ => w,
        },
    };
    let request = GroupRequest {
        programs: Vec::new(),
        pipes: g.pipes.clone(),
        wall_time_s: wall,
        ends_with: g.ends_with.clone(),
    };
    // Only the number of programs matters to the graph's rules: stand-ins do.
    let stand_ins = programs
        .iter()
        .map(|_| sandbox::Spec::new(sandbox::RootFs::Dir("/".into()), Vec::new()))
        .collect();
    if let Err(e) = crate::exec::runner::core_group(&request, stand_ins).validate() {
        let m = match e {
            sandbox::Error::InvalidSpec(m) => m,
            other => other.to_string(),
        };
        return Err(Error::Invalid(format!("'pipes': {m}")));
    }
    for (k, pipe) in g.pipes.iter().enumerate() {
        let i = pipe.to.program;
        if pipe.to.fd == 0 && programs.get(i).is_some_and(|p| p.stdin.is_some()) {
            return Err(Error::Invalid(format!(
                "'programs[{i}].stdin': program {i} reads its fd 0 from pipe {k}; give one or the other"
            )));
        }
    }
    Ok(request)
}

/// `TooMany` when the owner already has `max_executions` queued or running. The caller holds
/// the admission lock from this check until the execution is queued.
pub async fn admit<Q: Queue + ?Sized>(queue: &Q, owner: &str, quota: &Quota) -> Result<()> {
    if let Some(max) = quota.max_executions {
        let active = queue.count_active(owner).await?;
        if active >= max {
            return Err(Error::TooMany {
                message: format!(
                    "this API key may have {max} execution(s) queued or running at once \
                     (max_executions); {active} are"
                ),
                retry_after: 1,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped_checked_and_defaulted() {
        let none = Quota::default();
        let d = effective_limits(&RequestedLimits::default(), &none).unwrap();
        assert_eq!(
            (d.memory_bytes, d.cpu_time_s, d.pids),
            (256 << 20, 10.0, 64)
        );
        let key = Quota {
            max_memory: Some(64 << 20),
            max_time: Some(2.0),
            max_executions: Some(1),
        };
        let k = effective_limits(&RequestedLimits::default(), &key).unwrap();
        assert_eq!(
            (k.memory_bytes, k.cpu_time_s, k.wall_time_s),
            (64 << 20, 2.0, 2.0)
        );
        let over = RequestedLimits {
            memory_bytes: Some(128 << 20),
            ..Default::default()
        };
        assert!(
            matches!(effective_limits(&over, &key), Err(Error::OverKeyLimit(m)) if m.contains("max_memory"))
        );
        let zero = RequestedLimits {
            cpu_time_s: Some(0.0),
            ..Default::default()
        };
        assert!(
            matches!(effective_limits(&zero, &none), Err(Error::Invalid(m)) if m.contains("cpu_time_s"))
        );
        let huge = RequestedLimits {
            wall_time_s: Some(1e20),
            ..Default::default()
        };
        assert!(effective_limits(&huge, &none).is_err());
    }
}
