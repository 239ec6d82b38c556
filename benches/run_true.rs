//! One whole sandboxed run of busybox `true`: fresh namespaces (all seven), a fresh cgroup,
//! the rootfs mounted, seccomp, exec, reap, measurement, cleanup. The engine is reused, as a
//! server or harness would.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox::{EndReason, Io, RootFs, Sandbox, SandboxConfig, Spec};

fn rootfs() -> PathBuf {
    std::env::var_os("SANDPIT_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/rootfs/busybox"))
        })
}

fn run_true(c: &mut Criterion) {
    let engine = Sandbox::new(SandboxConfig::default()).expect("engine (run as root)");
    let spec = Spec::new(RootFs::Dir(rootfs()), vec!["/bin/true".into()]);
    let mut group = c.benchmark_group("sandbox");
    group.bench_function("run_true", |b| {
        b.iter(|| {
            let o = engine.run(&spec, Io::default()).expect("run");
            assert_eq!(o.end_reason, EndReason::Normal);
        })
    });
    group.finish();
}

criterion_group!(benches, run_true);
criterion_main!(benches);
