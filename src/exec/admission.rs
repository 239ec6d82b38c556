//! Who may run what: the limits an execution gets (asked for, else the defaults, within the
//! server's maxima and the API key's), a group's settings and graph, and what a key may hold
//! at once (executions queued or running, pending executions, files per execution, bytes
//! stored).

use crate::auth::Quota;
use crate::error::{Error, Result};
use crate::exec::request::{GroupRequest, Limits, NewGroup, NewProgram, RequestedLimits};
use crate::store::{Queue, Usage};

/// Outputs an execution may name: each is read into memory by the core after the run (at
/// most `limits.output_bytes` each), so their number bounds a run's memory.
pub const MAX_OUTPUTS: usize = 16;

/// The server's maximum of every limit: no execution gets more, whoever asks (the master token
/// too). `sandpit serve` flags set them; keys may set lower ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitCaps {
    pub memory_bytes: u64,
    pub cpu_time_s: f64,
    pub wall_time_s: f64,
    pub pids: u64,
    /// Bytes of stdout and of stderr (each) the core keeps in memory during a run.
    pub output_bytes: u64,
}

impl Default for LimitCaps {
    fn default() -> Self {
        LimitCaps {
            memory_bytes: 4 << 30,
            cpu_time_s: 3600.0,
            wall_time_s: 3600.0,
            pids: 1024,
            output_bytes: 64 << 20,
        }
    }
}

/// What a key may hold, unless the key sets lower values. Files per execution bound every
/// request (the master token's too); pending executions and bytes stored are per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_pending: u64,
    pub max_files: u64,
    pub max_storage_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_pending: 64,
            max_files: 1000,
            max_storage_bytes: 1 << 30,
        }
    }
}

/// The server's admission policy: `sandpit serve` builds it from its flags.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    pub caps: LimitCaps,
    pub quotas: Quotas,
}

/// The lower of the server's maximum and the key's, and whose it is (for the message).
fn lowest<T: PartialOrd + Copy>(server: T, key: Option<T>, key_field: &'static str) -> (T, String) {
    match key {
        Some(k) if k < server => (k, format!("this API key's {key_field}")),
        _ => (server, "the server's maximum".to_string()),
    }
}

/// One limit: asked for (at most the maximum, more than 0), else the default held to the
/// maximum.
fn limit<T: PartialOrd + Copy + Default + std::fmt::Display>(
    asked: Option<T>,
    default: T,
    (max, whose): (T, String),
    field: &str,
) -> Result<T> {
    match asked {
        Some(a) if a <= T::default() => Err(Error::Invalid(format!(
            "limits.{field} must be more than 0"
        ))),
        Some(a) if a > max => Err(Error::OverLimit(format!(
            "limits.{field} = {a} is over {whose} of {max}"
        ))),
        Some(a) => Ok(a),
        None if default > max => Ok(max),
        None => Ok(default),
    }
}

/// The limits an execution runs with. The defaults are the core's own (`sandbox::Limits`).
pub fn effective_limits(asked: &RequestedLimits, key: &Quota, caps: &LimitCaps) -> Result<Limits> {
    let d = sandbox::Limits::default();
    let secs = |x: Option<std::time::Duration>, cap: f64| x.map_or(cap, |d| d.as_secs_f64());
    Ok(Limits {
        memory_bytes: limit(
            asked.memory_bytes,
            d.memory_bytes.unwrap_or(caps.memory_bytes),
            lowest(caps.memory_bytes, key.max_memory, "max_memory"),
            "memory_bytes",
        )?,
        cpu_time_s: limit(
            asked.cpu_time_s,
            secs(d.cpu_time, caps.cpu_time_s),
            lowest(caps.cpu_time_s, key.max_time, "max_time"),
            "cpu_time_s",
        )?,
        wall_time_s: limit(
            asked.wall_time_s,
            secs(d.wall_time, caps.wall_time_s),
            lowest(caps.wall_time_s, key.max_time, "max_time"),
            "wall_time_s",
        )?,
        pids: limit(
            asked.pids,
            d.pids.unwrap_or(caps.pids),
            lowest(caps.pids, key.max_pids, "max_pids"),
            "pids",
        )?,
        output_bytes: limit(
            asked.output_bytes,
            d.output_bytes.unwrap_or(caps.output_bytes),
            lowest(caps.output_bytes, key.max_output_bytes, "max_output_bytes"),
            "output_bytes",
        )?,
    })
}

/// Input files per execution: at most the server's (and the key's) `max_files`.
pub fn check_files(files: u64, key: &Quota, quotas: &Quotas) -> Result<()> {
    let (max, whose) = lowest(quotas.max_files, key.max_files, "max_files");
    if files > max {
        return Err(Error::OverQuota(format!(
            "an execution may hold at most {max} input files ({whose}); this one would hold \
             {files}"
        )));
    }
    Ok(())
}

/// The key's storage quota: the lower of the server's `max_storage_bytes` and the key's, and
/// whose it is. It bounds everything the key keeps on disk: its executions and its kept files.
pub fn storage_quota(key: &Quota, quotas: &Quotas) -> (u64, String) {
    lowest(
        quotas.max_storage_bytes,
        key.max_storage_bytes,
        "max_storage_bytes",
    )
}

/// Bytes stored: `adding` more must fit in the key's storage quota (the master token has none).
pub fn check_storage(usage: &Usage, adding: u64, key: &Quota, quotas: &Quotas) -> Result<()> {
    let (max, whose) = storage_quota(key, quotas);
    if usage.total_bytes().saturating_add(adding) > max {
        return Err(Error::OverQuota(format!(
            "this API key may keep at most {max} bytes on the server ({whose}); its executions \
             keep {} and its kept files {}, and this would add {adding}: delete executions or \
             files (DELETE /api/v1/files/{{id}}) it no longer needs",
            usage.stored_bytes, usage.kept_bytes
        )));
    }
    Ok(())
}

/// Bytes the key's storage quota leaves.
pub fn storage_left(usage: &Usage, key: &Quota, quotas: &Quotas) -> u64 {
    storage_quota(key, quotas)
        .0
        .saturating_sub(usage.total_bytes())
}

/// One more pending execution for a key: at most `max_pending` (429).
pub fn check_pending(usage: &Usage, key: &Quota, quotas: &Quotas) -> Result<()> {
    let (max, whose) = lowest(quotas.max_pending, key.max_pending, "max_pending");
    if usage.pending >= max {
        return Err(Error::TooMany {
            message: format!(
                "this API key may have at most {max} pending executions ({whose}); {} are: \
                 start or delete some",
                usage.pending
            ),
            retry_after: 1,
        });
    }
    Ok(())
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
    caps: &LimitCaps,
) -> Result<GroupRequest> {
    // Each program's is within the maximum already.
    let longest = limits.iter().map(|l| l.wall_time_s).fold(0.0, f64::max);
    let (max, whose) = lowest(caps.wall_time_s, quota.max_time, "max_time");
    let wall = match g.wall_time_s {
        None => longest,
        Some(w) if w > max => {
            return Err(Error::OverLimit(format!(
                "wall_time_s = {w} is over {whose} of {max}"
            )))
        }
        Some(w) => w,
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
pub async fn admit<Q: Queue + ?Sized>(queue: &Q, owner: &str, key: &Quota) -> Result<()> {
    if let Some(max) = key.max_executions {
        let active = queue.usage(owner).await?.active;
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
        let caps = LimitCaps::default();
        let none = Quota::default();
        let d = effective_limits(&RequestedLimits::default(), &none, &caps).unwrap();
        assert_eq!(
            (d.memory_bytes, d.cpu_time_s, d.pids),
            (256 << 20, 10.0, 64)
        );
        let key = Quota {
            max_memory: Some(64 << 20),
            max_time: Some(2.0),
            max_executions: Some(1),
            max_pids: Some(8),
            ..Quota::default()
        };
        let k = effective_limits(&RequestedLimits::default(), &key, &caps).unwrap();
        assert_eq!(
            (k.memory_bytes, k.cpu_time_s, k.wall_time_s, k.pids),
            (64 << 20, 2.0, 2.0, 8)
        );
        let over = RequestedLimits {
            memory_bytes: Some(128 << 20),
            ..Default::default()
        };
        assert!(
            matches!(effective_limits(&over, &key, &caps), Err(Error::OverLimit(m)) if m.contains("max_memory"))
        );
        let zero = RequestedLimits {
            cpu_time_s: Some(0.0),
            ..Default::default()
        };
        assert!(
            matches!(effective_limits(&zero, &none, &caps), Err(Error::Invalid(m)) if m.contains("cpu_time_s"))
        );
        // The server's maxima hold for everyone, whatever a key allows.
        for asked in [
            RequestedLimits {
                wall_time_s: Some(1e20),
                ..Default::default()
            },
            RequestedLimits {
                pids: Some(u64::MAX),
                ..Default::default()
            },
            RequestedLimits {
                output_bytes: Some(512 << 20),
                ..Default::default()
            },
        ] {
            let generous = Quota {
                max_output_bytes: Some(u64::MAX),
                ..Quota::default()
            };
            assert!(
                matches!(effective_limits(&asked, &generous, &caps), Err(Error::OverLimit(m)) if m.contains("server")),
                "{asked:?}"
            );
        }
        // Server maxima below the core's defaults hold the defaults down.
        let small = LimitCaps { pids: 4, ..caps };
        assert_eq!(
            effective_limits(&RequestedLimits::default(), &none, &small)
                .unwrap()
                .pids,
            4
        );
    }

    #[test]
    fn quotas() {
        let q = Quotas::default();
        let key = Quota {
            max_files: Some(2),
            max_pending: Some(1),
            max_storage_bytes: Some(100),
            ..Quota::default()
        };
        assert!(check_files(2, &key, &q).is_ok());
        assert!(
            matches!(check_files(3, &key, &q), Err(Error::OverQuota(m)) if m.contains("max_files"))
        );
        let used = Usage {
            pending: 1,
            active: 0,
            stored_bytes: 60,
            kept_bytes: 30,
        };
        assert!(matches!(
            check_pending(&used, &key, &q),
            Err(Error::TooMany { .. })
        ));
        assert!(check_storage(&used, 10, &key, &q).is_ok());
        assert!(matches!(
            check_storage(&used, 11, &key, &q),
            Err(Error::OverQuota(_))
        ));
        // A key's quota never exceeds the server's.
        let lavish = Quota {
            max_files: Some(1 << 40),
            ..Quota::default()
        };
        assert!(check_files(q.max_files + 1, &lavish, &q).is_err());
    }
}
