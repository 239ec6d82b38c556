//! The server's metrics, kept with `prometheus-client` and served in Prometheus' (OpenMetrics)
//! text format at `GET /metrics`. One [`Metrics`] handle lives in the `App`; whoever has
//! something to count holds an `Arc` of it and calls its methods: the execution-end listener
//! (`ends.rs`), the HTTP layer, the warm pool (prepared sandboxes) and callback delivery.
//! Gauges that are facts of the store or the scheduler (queue depth, busy slots) are read when
//! scraped, so they are never out of step.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::exec::{EndReason, ExecutionResult};

/// The media type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of a run's wall time, seconds: a quick program to a long job.
const RUN_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of a sandbox's setup, seconds (a fresh sandbox takes milliseconds).
const SETUP_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Buckets of an HTTP request's time to its answer's head, seconds.
const HTTP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

/// How a run found its sandbox: `prepared` (the warm pool's) or `fresh`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    sandbox: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    /// The route's pattern (`/api/v1/executions/{id}`), so the label's values are bounded.
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// The route label of a request no route matched.
pub const NO_ROUTE: &str = "unmatched";

/// A method as a label: the standard ones by name, anything else as `OTHER` (clients choose
/// methods, and a label must not take unbounded values).
pub fn method_label(method: &hyper::Method) -> &'static str {
    use hyper::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        _ => "OTHER",
    }
}

pub struct Metrics {
    /// Encoding takes the registry by reference; the lock keeps two scrapes from interleaving
    /// their gauge updates with each other's encoding.
    registry: Mutex<Registry>,
    executions_ended: Family<EndLabels, Counter>,
    run_seconds: Histogram,
    setup_seconds: Histogram,
    queue_wait_seconds: Histogram,
    ends_missed: Counter,
    queue_depth: Gauge,
    slots: Gauge,
    slots_busy: Gauge,
    prepared: Family<EnvLabels, Gauge>,
    pool_runs: Family<SandboxLabels, Counter>,
    callback_deliveries: Counter,
    callback_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    audit_failures: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Mutex::new(Registry::default()),
            executions_ended: Family::default(),
            run_seconds: run_histogram(),
            setup_seconds: Histogram::new(SETUP_BUCKETS),
            queue_wait_seconds: run_histogram(),
            ends_missed: Counter::default(),
            queue_depth: Gauge::default(),
            slots: Gauge::default(),
            slots_busy: Gauge::default(),
            prepared: Family::default(),
            pool_runs: Family::default(),
            callback_deliveries: Counter::default(),
            callback_failures: Counter::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(http_histogram as fn() -> Histogram),
            audit_failures: Counter::default(),
        };
        let mut root = Registry::with_prefix("sandpit");
        // Every end reason is shown from the start, at 0, so that rates work from the first
        // scrape.
        for reason in EndReason::ALL {
            let _ = m.executions_ended.get_or_create(&EndLabels {
                reason: reason.as_str(),
            });
        }
        root.register(
            "executions_ended",
            "Executions that ended, by end reason",
            m.executions_ended.clone(),
        );
        root.register_with_unit(
            "execution_run",
            "Wall time of each ended execution that ran: its program's, or a group's longest program's",
            Unit::Seconds,
            m.run_seconds.clone(),
        );
        root.register_with_unit(
            "execution_setup",
            "Time to set up each sandbox that ran a program (one per program of a group), when the core reports it",
            Unit::Seconds,
            m.setup_seconds.clone(),
        );
        root.register_with_unit(
            "execution_queue_wait",
            "Time each execution that ran waited in the queue for a slot",
            Unit::Seconds,
            m.queue_wait_seconds.clone(),
        );
        root.register(
            "execution_ends_missed",
            "Execution ends the metrics listener missed (it fell behind); counts are short by this",
            m.ends_missed.clone(),
        );
        root.register(
            "queue_depth",
            "Executions queued, waiting for a slot",
            m.queue_depth.clone(),
        );
        root.register("slots", "Slots: runs at once", m.slots.clone());
        root.register(
            "slots_busy",
            "Slots running an execution now",
            m.slots_busy.clone(),
        );
        root.register(
            "prepared_sandboxes",
            "Sandboxes prepared ahead of use, by environment",
            m.prepared.clone(),
        );
        root.register(
            "pool_runs",
            "Single programs run through the warm pool, by how they found their sandbox: prepared ahead, or set up fresh (none was ready)",
            m.pool_runs.clone(),
        );
        root.register(
            "callback_deliveries",
            "Callbacks delivered (answered with a 2xx)",
            m.callback_deliveries.clone(),
        );
        root.register(
            "callback_failures",
            "Callback delivery attempts that failed",
            m.callback_failures.clone(),
        );
        root.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            m.http_requests.clone(),
        );
        root.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer's head, by method and route pattern",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        root.register(
            "audit_failures",
            "State-changing requests whose audit row could not be stored",
            m.audit_failures.clone(),
        );
        m.registry = Mutex::new(root);
        m
    }

    /// An execution ended (called once per end, by the end listener). The end is counted
    /// last, so a scrape that sees it sees its times too.
    pub fn execution_ended(
        &self,
        reason: EndReason,
        result: Option<&ExecutionResult>,
        queue_wait_s: Option<f64>,
    ) {
        if let Some(r) = result {
            // One run time per execution (a group's: its longest program's), one setup per
            // sandbox (each program of a group has its own).
            if let Some(wall) = r.programs().map(|p| p.wall_time_s).reduce(f64::max) {
                self.run_seconds.observe(wall);
            }
            for setup in r.programs().filter_map(|p| p.setup_s) {
                self.setup_seconds.observe(setup);
            }
        }
        if let Some(wait) = queue_wait_s {
            self.queue_wait_seconds.observe(wait);
        }
        self.executions_ended
            .get_or_create(&EndLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The end listener fell behind by `n` ends.
    pub fn ends_missed(&self, n: u64) {
        self.ends_missed.inc_by(n);
    }

    /// How many sandboxes are prepared for `envid` now (set by the warm pool).
    pub fn set_prepared(&self, envid: &str, n: i64) {
        self.prepared
            .get_or_create(&EnvLabels {
                environment: envid.to_string(),
            })
            .set(n);
    }

    /// A callback was delivered.
    pub fn callback_delivered(&self) {
        self.callback_deliveries.inc();
    }

    /// A callback delivery attempt failed.
    pub fn callback_failed(&self) {
        self.callback_failures.inc();
    }

    /// A state-changing request's audit row could not be stored.
    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    /// An HTTP request was answered.
    pub fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }

    /// The exposition, with what is read now: `queue_depth` from the store, `slots` and
    /// `slots_busy` from the scheduler, `pool` (counts since the start) from the warm pool.
    pub fn encode(
        &self,
        queue_depth: i64,
        slots: usize,
        slots_busy: usize,
        pool: sandbox::PoolRuns,
    ) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // The pool counts; the counters catch up with it under the lock, one scrape at a time.
        for (sandbox, total) in [("prepared", pool.prepared), ("fresh", pool.fresh)] {
            let counter = self.pool_runs.get_or_create(&SandboxLabels { sandbox });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.queue_depth.set(queue_depth);
        self.slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
        self.slots_busy
            .set(i64::try_from(slots_busy).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String never fails.
        let _ = encode(&mut text, &registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let m = Metrics::new();
        m.execution_ended(EndReason::Timeout, None, Some(0.2));
        m.set_prepared("python3", 3);
        m.callback_delivered();
        m.callback_failed();
        m.http_request("GET", "/api/v1/executions/{id}", 404, 0.001);
        let pool = sandbox::PoolRuns {
            prepared: 7,
            fresh: 2,
        };
        let _ = m.encode(0, 4, 2, pool);
        let text = m.encode(5, 4, 2, pool);
        for line in [
            "sandpit_executions_ended_total{reason=\"timeout\"} 1",
            "sandpit_executions_ended_total{reason=\"normal\"} 0",
            "sandpit_queue_depth 5",
            "sandpit_slots 4",
            "sandpit_slots_busy 2",
            "sandpit_prepared_sandboxes{environment=\"python3\"} 3",
            "sandpit_pool_runs_total{sandbox=\"prepared\"} 7",
            "sandpit_pool_runs_total{sandbox=\"fresh\"} 2",
            "sandpit_callback_deliveries_total 1",
            "sandpit_callback_failures_total 1",
            "sandpit_http_requests_total{method=\"GET\",route=\"/api/v1/executions/{id}\",status=\"404\"} 1",
            "sandpit_execution_queue_wait_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
