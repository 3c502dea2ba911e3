//! The Docker logging plugin (`berth-log-appender --docker-plugin`,
//! `docker run --log-driver berth`): Docker's plugin API on a unix socket
//! (`plugin`), the FIFO entries dockerd writes (`entry`), one appender
//! pipeline per container (`logger`), its `--log-opt`s (`opts`), and the
//! ring `docker logs` reads (`ring`).

pub mod entry;
pub mod logger;
pub mod opts;
pub mod plugin;
pub mod ring;
