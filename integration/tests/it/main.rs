//! Berth's integration tests: one test binary, so the private engines start
//! once per run and are shared by every test. Run as root (scripts/test).

mod builtin;
mod builtin_diff;
mod builtin_lifecycle;
mod chaos;
mod cni_gc;
mod cni_lib;
mod cpu_matrix;
mod cpu_split;
mod cpus;
mod cri_backends;
mod harness;
mod log_appender;
mod log_plugin;
mod macvlan;
mod nri;
mod ovs_vlan;
mod packages;
mod runtime;
mod share;
mod vm;
