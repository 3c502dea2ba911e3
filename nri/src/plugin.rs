//! An NRI plugin's connection: register with the runtime, then answer its
//! calls until the socket closes. The [`Handler`] decides what each call
//! does; this module only speaks the protocol.

use crate::proto::{self, event};
use crate::wire::{self, Reassembler, WireError};
use prost::Message as _;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What a plugin does with the runtime's calls. An `Err` is returned to the
/// runtime as the call's error: for CreateContainer, the container is not
/// created and the message reaches kubelet's events.
pub trait Handler {
    /// The events to subscribe to (see [`event`]).
    fn events(&self) -> Vec<u32>;
    /// Configure: the runtime's name and versions, and the plugin's
    /// configuration from it in `config` (the file containerd's
    /// `plugin_config_path` holds for it), empty if none. An error fails
    /// the registration.
    fn configure(&mut self, runtime: &proto::ConfigureRequest) -> Result<(), String>;
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
    /// UpdateContainer: how the container's update is changed, and updates
    /// of others. By default nothing changes.
    fn update_container(
        &mut self,
        _req: proto::UpdateContainerRequest,
    ) -> Result<proto::UpdateContainerResponse, String> {
        Ok(proto::UpdateContainerResponse::default())
    }
    /// PostUpdateContainer: the runtime applied an update. What it returns
    /// is sent as an unsolicited `UpdateContainers`.
    fn post_update_container(
        &mut self,
        _container: proto::Container,
    ) -> Vec<proto::ContainerUpdate> {
        Vec::new()
    }
    /// StopContainer: updates of the remaining containers.
    fn stop_container(
        &mut self,
        req: proto::ContainerRequest,
    ) -> Result<proto::StopContainerResponse, String>;
    /// A container was removed. What it returns is sent to the runtime as
    /// an unsolicited `UpdateContainers` (RemoveContainer's answer carries
    /// no updates).
    fn remove_container(&mut self, container: proto::Container) -> Vec<proto::ContainerUpdate>;
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
    let register = proto::RegisterPluginRequest {
        plugin_name: name.into(),
        plugin_idx: index.into(),
        nri_version: String::new(),
    };
    wire::write_request(
        &mut sock,
        wire::RUNTIME_CONN,
        1,
        proto::RUNTIME_SERVICE,
        "RegisterPlugin",
        register.encode_to_vec(),
    )?;
    tracing::info!(name, index, "registering with the runtime");
    let mut re = Reassembler::default();
    // Streams this side opens on the runtime's connection are odd; 1 was
    // the registration.
    let mut next_stream = 3;
    loop {
        let (conn, data) = match wire::read_frame(&mut sock) {
            Ok(f) => f,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        for msg in re.push(conn, &data)? {
            match (conn, msg.kind) {
                (wire::RUNTIME_CONN, wire::TYPE_RESPONSE) if msg.stream == 1 => {
                    let r = wire::Response::decode(msg.body.as_slice())?;
                    if let Some(s) = r.status.filter(|s| s.code != 0) {
                        return Err(WireError::Protocol(format!(
                            "the runtime refused the registration: {}",
                            s.message
                        )));
                    }
                    tracing::info!("registered");
                }
                (wire::RUNTIME_CONN, wire::TYPE_RESPONSE) => updated(&msg.body),
                (wire::PLUGIN_CONN, wire::TYPE_REQUEST) => {
                    let req = wire::Request::decode(msg.body.as_slice())?;
                    let mut unsolicited = Vec::new();
                    let resp = dispatch(handler, &req, &mut unsolicited);
                    wire::write_response(&mut sock, wire::PLUGIN_CONN, msg.stream, &resp)?;
                    // Sent after the answer: the runtime applies it once
                    // the call that caused it is over.
                    if !unsolicited.is_empty() {
                        let n = unsolicited.len();
                        let update = proto::UpdateContainersRequest {
                            update: unsolicited,
                        };
                        wire::write_request(
                            &mut sock,
                            wire::RUNTIME_CONN,
                            next_stream,
                            proto::RUNTIME_SERVICE,
                            "UpdateContainers",
                            update.encode_to_vec(),
                        )?;
                        next_stream += 2;
                        tracing::debug!(containers = n, "asked the runtime to update containers");
                    }
                }
                (c, k) => tracing::debug!(conn = c, kind = k, "ignoring an unexpected message"),
            }
        }
    }
}

/// The runtime's answer to an `UpdateContainers`: logs what it could not do.
fn updated(body: &[u8]) {
    let failed = wire::Response::decode(body).map(|r| {
        let status = r.status.filter(|s| s.code != 0).map(|s| s.message);
        let failed = proto::UpdateContainersResponse::decode(r.payload.as_slice())
            .map(|f| f.failed)
            .unwrap_or_default();
        (status, failed)
    });
    match failed {
        Ok((Some(e), _)) => tracing::warn!("the runtime refused to update containers: {e}"),
        Ok((None, f)) if !f.is_empty() => {
            let ids: Vec<&str> = f.iter().map(|u| u.container_id.as_str()).collect();
            tracing::warn!(containers = ?ids, "the runtime could not update some containers");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot decode the runtime's answer to UpdateContainers: {e}"),
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

fn dispatch(
    h: &mut impl Handler,
    req: &wire::Request,
    unsolicited: &mut Vec<proto::ContainerUpdate>,
) -> wire::Response {
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
                tracing::info!(runtime = %c.runtime_name, version = %c.runtime_version, nri = %c.nri_version, "configured by the runtime");
                match h.configure(&c) {
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
        "UpdateContainer" => match proto::UpdateContainerRequest::decode(p) {
            Ok(r) => answer(h.update_container(r)),
            Err(e) => bad(e),
        },
        "StopContainer" => match proto::ContainerRequest::decode(p) {
            Ok(r) => answer(h.stop_container(r)),
            Err(e) => bad(e),
        },
        // NRI 0.8 sends these as StateChange; later versions as their own calls.
        "RemoveContainer" | "PostUpdateContainer" => match proto::ContainerRequest::decode(p) {
            Ok(r) => {
                let ev = if req.method == "RemoveContainer" {
                    event::REMOVE_CONTAINER
                } else {
                    event::POST_UPDATE_CONTAINER
                };
                state_change(h, ev, r.container, unsolicited);
                ok(proto::Empty {}.encode_to_vec())
            }
            Err(e) => bad(e),
        },
        "StateChange" => match proto::StateChangeEvent::decode(p) {
            Ok(ev) => {
                if let Ok(e) = u32::try_from(ev.event) {
                    state_change(h, e, ev.container, unsolicited);
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

/// An event without an answer of its own.
fn state_change(
    h: &mut impl Handler,
    ev: u32,
    container: Option<proto::Container>,
    unsolicited: &mut Vec<proto::ContainerUpdate>,
) {
    let Some(c) = container else { return };
    match ev {
        event::REMOVE_CONTAINER => unsolicited.extend(h.remove_container(c)),
        event::POST_UPDATE_CONTAINER => unsolicited.extend(h.post_update_container(c)),
        _ => {}
    }
}
