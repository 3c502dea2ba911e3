//! An NRI plugin's connection: register with the runtime, then answer its
//! calls until the socket closes. The [`Handler`] decides what each call
//! does; this module only speaks the protocol.

use crate::proto::{self, event};
use crate::wire::{self, Message, Reassembler, WireError};
use prost::Message as _;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What a plugin does with the runtime's calls. An `Err` is returned to the
/// runtime as the call's error: for CreateContainer, the container is not
/// created and the message reaches kubelet's events.
pub trait Handler {
    /// The events to subscribe to (see [`event`]).
    fn events(&self) -> Vec<u32>;
    /// Configure: the plugin's configuration from the runtime (the file
    /// containerd's `plugin_config_path` holds for it), empty if none. An
    /// error fails the registration.
    fn configure(&mut self, config: &str) -> Result<(), String>;
    /// Synchronize: the runtime's pods and containers at registration.
    fn synchronize(
        &mut self,
        req: proto::SynchronizeRequest,
    ) -> Result<proto::SynchronizeResponse, String>;
    /// CreateContainer: the adjustment of the new container and updates of others.
    fn create_container(
        &mut self,
        req: proto::ContainerRequest,
    ) -> Result<proto::CreateContainerResponse, String>;
    /// StopContainer: updates of the remaining containers.
    fn stop_container(
        &mut self,
        req: proto::ContainerRequest,
    ) -> Result<proto::StopContainerResponse, String>;
    /// A container was removed.
    fn remove_container(&mut self, container: proto::Container);
}

/// Connects to the runtime's NRI socket, registers as `name` with index
/// `index` (two digits: plugins run in ascending order), and serves
/// `handler` until the connection ends. Returns why it ended.
pub fn serve(socket: &Path, name: &str, index: &str, handler: &mut impl Handler) -> WireError {
    match UnixStream::connect(socket) {
        Ok(s) => {
            tracing::info!(socket = %socket.display(), "connected");
            serve_stream(s, name, index, handler)
        }
        Err(e) => WireError::Io(e),
    }
}

/// [`serve`] on a connection already made (a pre-registered plugin gets
/// one from containerd).
pub fn serve_stream(
    sock: UnixStream,
    name: &str,
    index: &str,
    handler: &mut impl Handler,
) -> WireError {
    match serve_inner(sock, name, index, handler) {
        Ok(()) => WireError::Protocol("the runtime closed the connection".into()),
        Err(e) => e,
    }
}

fn serve_inner(
    mut sock: UnixStream,
    name: &str,
    index: &str,
    handler: &mut impl Handler,
) -> Result<(), WireError> {
    let register = wire::Request {
        service: proto::RUNTIME_SERVICE.into(),
        method: "RegisterPlugin".into(),
        payload: proto::RegisterPluginRequest {
            plugin_name: name.into(),
            plugin_idx: index.into(),
            nri_version: String::new(),
        }
        .encode_to_vec(),
        timeout_nano: 0,
    };
    let m = Message {
        stream: 1,
        kind: wire::TYPE_REQUEST,
        body: register.encode_to_vec(),
    };
    wire::write_frame(&mut sock, wire::RUNTIME_CONN, &m.encode())?;
    tracing::info!(name, index, "registering with the runtime");
    let mut re = Reassembler::default();
    loop {
        let (conn, data) = match wire::read_frame(&mut sock) {
            Ok(f) => f,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        for msg in re.push(conn, &data)? {
            match (conn, msg.kind) {
                (wire::RUNTIME_CONN, wire::TYPE_RESPONSE) => {
                    let r = wire::Response::decode(msg.body.as_slice())?;
                    if let Some(s) = r.status.filter(|s| s.code != 0) {
                        return Err(WireError::Protocol(format!(
                            "the runtime refused the registration: {}",
                            s.message
                        )));
                    }
                    tracing::info!("registered");
                }
                (wire::PLUGIN_CONN, wire::TYPE_REQUEST) => {
                    let req = wire::Request::decode(msg.body.as_slice())?;
                    let resp = dispatch(handler, &req);
                    let out = Message {
                        stream: msg.stream,
                        kind: wire::TYPE_RESPONSE,
                        body: resp.encode_to_vec(),
                    };
                    wire::write_frame(&mut sock, wire::PLUGIN_CONN, &out.encode())?;
                }
                (c, k) => tracing::debug!(conn = c, kind = k, "ignoring an unexpected message"),
            }
        }
    }
}

fn ok(payload: Vec<u8>) -> wire::Response {
    wire::Response {
        status: None,
        payload,
    }
}

fn failed(code: i32, message: String) -> wire::Response {
    wire::Response {
        status: Some(wire::Status { code, message }),
        payload: Vec::new(),
    }
}

fn answer<T: prost::Message>(r: Result<T, String>) -> wire::Response {
    match r {
        Ok(v) => ok(v.encode_to_vec()),
        Err(e) => failed(wire::CODE_UNKNOWN, e),
    }
}

fn dispatch(h: &mut impl Handler, req: &wire::Request) -> wire::Response {
    let p = req.payload.as_slice();
    let bad = |e: prost::DecodeError| {
        failed(
            wire::CODE_UNKNOWN,
            format!("berth-nri: cannot decode {}: {e}", req.method),
        )
    };
    tracing::debug!(method = %req.method, "call");
    match req.method.as_str() {
        "Configure" => match proto::ConfigureRequest::decode(p) {
            Ok(c) => {
                tracing::info!(runtime = %c.runtime_name, version = %c.runtime_version, "configured by the runtime");
                match h.configure(&c.config) {
                    Ok(()) => ok(proto::ConfigureResponse {
                        events: event::mask(&h.events()),
                        request_timeout: 0,
                    }
                    .encode_to_vec()),
                    Err(e) => failed(wire::CODE_UNKNOWN, e),
                }
            }
            Err(e) => bad(e),
        },
        "Synchronize" => match proto::SynchronizeRequest::decode(p) {
            Ok(r) => answer(h.synchronize(r)),
            Err(e) => bad(e),
        },
        "CreateContainer" => match proto::ContainerRequest::decode(p) {
            Ok(r) => answer(h.create_container(r)),
            Err(e) => bad(e),
        },
        "StopContainer" => match proto::ContainerRequest::decode(p) {
            Ok(r) => answer(h.stop_container(r)),
            Err(e) => bad(e),
        },
        "RemoveContainer" => match proto::ContainerRequest::decode(p) {
            Ok(r) => {
                if let Some(c) = r.container {
                    h.remove_container(c);
                }
                ok(proto::Empty {}.encode_to_vec())
            }
            Err(e) => bad(e),
        },
        "StateChange" => match proto::StateChangeEvent::decode(p) {
            Ok(ev) => {
                if ev.event == event::REMOVE_CONTAINER as i32 {
                    if let Some(c) = ev.container {
                        h.remove_container(c);
                    }
                }
                ok(proto::Empty {}.encode_to_vec())
            }
            Err(e) => bad(e),
        },
        "Shutdown" => {
            tracing::info!("the runtime is shutting down");
            ok(proto::Empty {}.encode_to_vec())
        }
        other => failed(
            wire::CODE_UNIMPLEMENTED,
            format!("berth-nri does not handle {other}"),
        ),
    }
}
