//! kubelet's own CPU manager: with its `static` policy it pins Guaranteed
//! pods itself, which collides with Berth's split. The plugin warns.

use std::path::Path;

/// Where kubelet keeps its CPU manager's state.
pub const CPU_MANAGER_STATE: &str = "/var/lib/kubelet/cpu_manager_state";

/// Why the CPU manager state at `path` says kubelet pins CPUs itself (its
/// policy is `static`), or None (no file, another policy, unreadable).
pub fn static_cpu_manager(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v["policyName"] == "static").then(|| {
        format!(
            "kubelet's CPU manager policy is static ({})",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_static_policy_is_reported() {
        let d = std::env::temp_dir().join(format!("berth-nri-kubelet-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("cpu_manager_state");
        std::fs::write(
            &f,
            r#"{"policyName":"static","defaultCpuSet":"0-3","checksum":1}"#,
        )
        .unwrap();
        assert!(static_cpu_manager(&f).is_some_and(|w| w.contains("static")));
        std::fs::write(&f, r#"{"policyName":"none","checksum":1}"#).unwrap();
        assert_eq!(static_cpu_manager(&f), None);
        std::fs::write(&f, "not json").unwrap();
        assert_eq!(static_cpu_manager(&f), None);
        assert_eq!(static_cpu_manager(&d.join("missing")), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
